// The mini-program's App: the E证通 SDK initialised in onLaunch, and the
// onShow exclusion, as the integration guide asks (3.3 step 1; 注意事项 1-2).
//
// The SDK (the mp_ecard_sdk folder) comes from the FaceID console with your
// MerchantId and is not in this repository: copy it next to this file. The
// guide writes `import { initEid } from './mp_ecard_sdk/main'`; require is the
// same module to WeChat, and lets spec/conformance/miniprogram.test.js load
// this file unchanged.
const { initEid } = require("./mp_ecard_sdk/main");
const { isEidReturn } = require("./utils/eid_return");

App({
  globalData: {
    // Who the user is, for our server. DEMO ONLY: `eidkit serve --sim` takes
    // the subject from the X-Eidkit-Demo-User header (utils/api.js sends it).
    // A real mini-program logs in (wx.login -> your server -> a session) and
    // sends that session instead; the server's policy `authorize` reads it.
    demoUser: "",
    // How often the app came to the foreground on its own (not back from
    // eID): stands in for whatever your onShow really does.
    foregrounds: 0,
  },

  onLaunch() {
    // Registers the SDK's wx.onAppShow listener, which calls
    // verifyDoneCallback when the user comes back from the eID mini-program.
    initEid();
    let user = wx.getStorageSync("eidkit_demo_user");
    if (!user) {
      user = `demo-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
      wx.setStorageSync("eidkit_demo_user", user);
    }
    this.globalData.demoUser = user;
  },

  onShow(options) {
    // Coming back from the eID mini-program fires onShow too: that return
    // belongs to the SDK (verifyDoneCallback), not to our foreground logic.
    if (isEidReturn(options)) return;
    this.globalData.foregrounds += 1;
  },
});
