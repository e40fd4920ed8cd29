// The verification page. Our server issues the EidToken (POST /eid/token),
// the E证通 SDK runs the verification in the eID mini-program (startEid), and
// verifyDoneCallback asks our server for the verdict (POST /eid/result). The
// server pulls GetEidResult from Tencent itself and checks that the token is
// this user's: nothing the front end says decides the result, not even
// verifyDone (false when the user backed out; the server still answers,
// with "pending" if there is no verdict).
const { startEid } = require("../../mp_ecard_sdk/main");
const { post } = require("../../utils/api");

Page({
  data: {
    state: "idle", // idle | starting | verifying | checking | done | error
    status: "", // passed | failed | pending | expired (from the server)
    reason: "",
    retryWithNewToken: false,
    error: "",
  },

  onVerify() {
    const busy = ["starting", "verifying", "checking"];
    if (busy.includes(this.data.state)) return;
    this.setData({ state: "starting", status: "", reason: "", error: "" });
    post("/eid/token", {})
      .then(({ EidToken }) => {
        this.eidToken = EidToken;
        this.setData({ state: "verifying" });
        startEid({
          data: { token: EidToken },
          verifyDoneCallback: (res) => this.onVerifyDone(res),
        });
      })
      .catch((err) => this.showError(err));
  },

  // res = {token, verifyDone} from the SDK. The token we send is the one
  // our server gave this page; the server refuses anyone else's anyway.
  onVerifyDone(res) {
    const EidToken = this.eidToken || (res && res.token);
    this.setData({ state: "checking" });
    return post("/eid/result", { EidToken })
      .then((r) => this.setData({ state: "done", status: r.status, reason: r.reason || "",
        retryWithNewToken: r.retry_with_new_token === true }))
      .catch((err) => this.showError(err));
  },

  showError(err) {
    this.setData({ state: "error", error: (err && err.code) || "error" });
  },
});
