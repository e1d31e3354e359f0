"use strict";
// Shows why the last login failed (the page itself holds no token).
if (new URLSearchParams(location.search).has("failed")) {
  document.getElementById("failed").hidden = false;
}
