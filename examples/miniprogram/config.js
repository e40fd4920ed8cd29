// Where `eidkit serve` answers /eid/token and /eid/result, as the phone
// reaches it: an https origin on your mini-program's request domain list
// (服务器域名), usually the merchant's own front server proxying /eid/ to it.
module.exports = {
  serverUrl: "https://shop.example",
};
