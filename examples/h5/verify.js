// Starts an E证通 H5 verification. Our server (`eidkit serve`, reached on
// this page's own origin under /eid/) issues the EidToken with RedirectUrl
// set to our /eid/h5/return; the browser goes to Tencent's page (Url). When
// the user is done, Tencent sends the browser to RedirectUrl with
// token=<EidToken> added, where eidkit serve pulls the result itself and
// redirects to done.html?status=... The page never sees the verdict first.
"use strict";

(function () {
  var button = document.getElementById("verify");
  var message = document.getElementById("message");

  button.addEventListener("click", function () {
    button.disabled = true;
    message.textContent = "正在准备…";
    fetch("/eid/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      // Same origin: the session cookie goes with it, and so does nothing else.
      body: JSON.stringify({ RedirectUrl: new URL("/eid/h5/return", location.href).href }),
    })
      .then(function (res) {
        return res.json().catch(function () { return null; }).then(function (body) {
          if (!res.ok || !body || typeof body.Url !== "string") {
            throw new Error((body && body.error && body.error.code) || "HTTP " + res.status);
          }
          location.assign(body.Url);
        });
      })
      .catch(function (e) {
        message.textContent = "出错了：" + e.message;
        button.disabled = false;
      });
  });
})();
