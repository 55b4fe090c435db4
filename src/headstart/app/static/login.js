"use strict";
function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : "";
}
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const flash = document.getElementById("flash");
  flash.textContent = "";
  const res = await fetch("/api/login", {method: "POST", headers: {"content-type": "application/json",
    "x-csrf-token": cookie("hs_csrf")}, body: JSON.stringify({token: document.getElementById("token").value})});
  if (res.ok) { location.href = "/"; return; }
  let msg = "Login failed.";
  try { msg = (await res.json()).error.message; } catch (e) { /* keep the default */ }
  flash.className = "error";
  flash.textContent = msg;
});
