// Is this onShow (or wx.onAppShow) the return from the eID 数字身份
// mini-program? The integration guide's rule (注意事项 2): scene 1038 (back
// from another mini-program) and referrerInfo.appId "wx0e2cb0b052a91c92".
//
// The same rule as eidkit's own, lua/eidkit/policy.lua `is_eid_return`
// (eidkit.policy.is_eid_return, the default `on_show` hook), case for case:
// a scene given as a string counts when Lua's tonumber reads 1038 from it;
// without referrerInfo, or with one that is not an object, it is not the
// return (the guide's snippet would throw there: it destructures
// referrerInfo unchecked). spec/conformance/miniprogram.test.js runs the
// same table through both.
const EID_APPID = "wx0e2cb0b052a91c92";
const EID_SCENE = 1038;

// Lua 5.4's tonumber(s) for a string: decimal or hexadecimal numerals,
// surrounding whitespace allowed; NaN where Lua gives nil.
function luaToNumber(s) {
  const t = s.replace(/^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g, "");
  if (/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) return Number(t);
  const m = /^([+-]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?\d+))?$/.exec(t);
  if (!m || m[2] + (m[3] || "") === "") return NaN;
  let v = 0;
  for (const d of m[2]) v = v * 16 + parseInt(d, 16);
  let f = 1 / 16;
  for (const d of m[3] || "") {
    v += parseInt(d, 16) * f;
    f /= 16;
  }
  v *= 2 ** Number(m[4] || 0);
  return m[1] === "-" ? -v : v;
}

function isEidReturn(options) {
  if (options === null || typeof options !== "object") return false;
  let scene = options.scene;
  if (typeof scene === "string") scene = luaToNumber(scene);
  if (scene !== EID_SCENE) return false;
  const ref = options.referrerInfo;
  return ref !== null && typeof ref === "object" && !Array.isArray(ref) && ref.appId === EID_APPID;
}

module.exports = { EID_APPID, EID_SCENE, isEidReturn };
