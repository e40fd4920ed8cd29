// The landing page after an H5 verification: eidkit serve's GET
// /eid/h5/return redirects here with ?status=passed|failed|pending|expired
// and &reason=..., or ?status=error&code=... (docs/internals/gateway.md).
// The status came from our server, which asked Tencent; still, a page
// address anyone can type grants nothing: whatever the user unlocks next
// must be checked on the server again.
"use strict";

(function () {
  var q = new URLSearchParams(location.search);
  var status = q.get("status") || "";
  var messages = {
    passed: "核验通过",
    failed: "核验未通过",
    pending: "尚未完成核验",
    expired: "核验已过期，请重新开始",
    error: "出错了",
  };
  document.getElementById("message").textContent = messages[status] || "未知结果";
  document.getElementById("status").textContent = status;
  document.getElementById("detail").textContent = q.get("reason") || q.get("code") || "";
})();
