// Our server's two routes, with wx.request: post(path, body) resolves with
// the JSON answer on 200 and rejects with {status, code, message} otherwise
// (code: the server's error code, e.g. "wrong_subject"; "network" when
// there was no answer). The server is `eidkit serve`; see ../README.md.
const config = require("../config");

function post(path, body) {
  const app = getApp();
  return new Promise((resolve, reject) => {
    wx.request({
      url: config.serverUrl + path,
      method: "POST",
      data: body,
      header: {
        "Content-Type": "application/json",
        // DEMO ONLY (see app.js): send your own session instead.
        "X-Eidkit-Demo-User": app.globalData.demoUser,
      },
      success(res) {
        if (res.statusCode === 200 && res.data && typeof res.data === "object") {
          resolve(res.data);
          return;
        }
        const e = (res.data && res.data.error) || {};
        reject({ status: res.statusCode, code: e.code || `http_${res.statusCode}`, message: e.message || "" });
      },
      fail(err) {
        reject({ status: 0, code: "network", message: (err && err.errMsg) || "" });
      },
    });
  });
}

module.exports = { post };
