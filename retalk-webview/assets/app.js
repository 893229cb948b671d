// retalk show --web: the page's only script (served as /app.js; the
// Content-Security-Policy allows no inline script). Every name and text
// goes into the page with textContent, never as HTML.
"use strict";
(() => {
  const token = new URLSearchParams(location.search).get("t") || "";
  const headers = {"X-Retalk-Token": token};
  // A conversation is its kind and id together: a group's id may equal a
  // peer's. `gen` counts selections: a poll answer for an earlier one is
  // dropped (it would append to, and advance lastRow of, the new thread).
  let sel = null, lastRow = 0, lastDay = "", gen = 0, busyGen = -1;
  const same = (c, s) => !!s && s.id === c.fingerprint && s.kind === c.kind;

  async function api(path) {
    let r;
    try {
      r = await fetch(path, {headers, cache: "no-store"});
    } catch (e) {
      // No answer at all: the command ended (Ctrl-C) or the machine slept.
      throw new Error("the retalk show --web server stopped");
    }
    if (r.status === 403)
      throw new Error("this link is from an earlier run of retalk show --web "
                      + "(the token changes each run): open the address it printed");
    if (!r.ok) throw new Error("the web view answered " + r.status);
    return r.json();
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  // A text under the terminal's rule (retalk_proto::display::is_hidden and
  // escape): control, bidirectional and invisible format characters show as
  // \t, \r, \x1b, \u{202e}, so a text cannot reorder or hide what it says,
  // and a typed backslash shows doubled (\\x1b: typed, \x1b: a real ESC);
  // its line breaks stay breaks (names arrive escaped by the server).
  const HIDDEN = new RegExp("[\\\\\\p{Cc}\\u2028\\u2029\\u061c\\u200e\\u200f\\u202a-\\u202e" +
    "\\u2066-\\u2069\\u00ad\\u180e\\u200b\\u2060-\\u2064\\u206a-\\u206f\\ufeff\\ufff9-\\ufffb" +
    "\\u034f\\u{1d173}-\\u{1d17a}\\u115f\\u1160\\u2800\\u3164\\uffa0\\u{e0000}-\\u{e007f}" +
    "\\u{e0100}-\\u{e01ef}\\ue000-\\uf8ff\\u{f0000}-\\u{10ffff}\\ufdd0-\\ufdef\\ufffe\\uffff]",
    "gu");
  function visible(text) {
    return String(text).replace(HIDDEN, c => {
      if (c === "\n") return c;
      if (c === "\\") return "\\\\";
      if (c === "\t") return "\\t";
      if (c === "\r") return "\\r";
      const n = c.codePointAt(0), hex = n.toString(16);
      return n < 0x100 ? "\\x" + hex.padStart(2, "0") : "\\u{" + hex.padStart(4, "0") + "}";
    });
  }
  function status(text) { document.getElementById("status").textContent = text; }
  function fmtDay(ts) { return new Date(ts * 1000).toLocaleDateString(); }
  function fmtTime(ts) {
    return new Date(ts * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  async function refreshConvos() {
    const d = await api("/api/conversations");
    document.getElementById("me").textContent = d.me;
    const box = document.getElementById("convos");
    box.replaceChildren();
    for (const c of d.conversations) {
      const div = el("div", "convo" + (same(c, sel) ? " sel" : ""));
      div.dataset.id = c.fingerprint;
      div.dataset.kind = c.kind;
      const nm = el("div", "nm", c.name);
      if (c.kind === "group") nm.appendChild(el("span", "badge", "group"));
      div.appendChild(nm);
      const n = c.count === 1 ? "1 message" : c.count + " messages";
      div.appendChild(el("div", "meta", (c.count ? n : "nothing saved yet")
                         + " · " + c.fingerprint.slice(0, 12) + "…"));
      div.addEventListener("click", () => select(c));
      box.appendChild(div);
    }
    if (!sel && d.conversations.length) select(d.conversations[0]);
  }

  function select(c) {
    sel = {id: c.fingerprint, kind: c.kind};
    gen += 1;
    lastRow = 0; lastDay = "";
    document.getElementById("peerName").textContent = c.name;
    document.getElementById("peerFp").textContent =
      (c.kind === "group" ? "group " : "") + c.fingerprint;
    const t = document.getElementById("thread");
    t.replaceChildren();
    t.dataset.id = c.fingerprint;
    t.dataset.kind = c.kind;
    for (const d of document.querySelectorAll(".convo"))
      d.classList.toggle("sel", d.dataset.id === c.fingerprint && d.dataset.kind === c.kind);
    poll().catch(e => status(e.message));
  }

  async function poll() {
    if (!sel || busyGen === gen) return;
    const mine = gen;
    busyGen = mine;
    try {
      const id = sel.id, group = sel.kind === "group";
      const d = await api("/api/messages?peer=" + encodeURIComponent(id)
                          + "&kind=" + sel.kind + "&after=" + lastRow);
      if (mine !== gen) return;  // another selection since: not this thread's rows
      const t = document.getElementById("thread");
      const stick = t.scrollHeight - t.scrollTop - t.clientHeight < 60;
      const placeholder = t.querySelector(".none");
      if (placeholder && d.messages.length) placeholder.remove();
      for (const m of d.messages) {
        lastRow = Math.max(lastRow, m.rowid);
        const day = fmtDay(m.ts);
        if (day !== lastDay) { t.appendChild(el("div", "day", "📅 " + day)); lastDay = day; }
        const b = el("div", "msg " + (m.direction === "out" ? "out" : "in"));
        b.dataset.rowid = m.rowid;
        if (m.direction !== "out" || group) b.appendChild(el("div", "who", m.name));
        b.appendChild(el("div", "text", visible(m.text)));
        b.appendChild(el("div", "tm", fmtTime(m.ts)));
        t.appendChild(b);
      }
      if (d.messages.length && stick) t.scrollTop = t.scrollHeight;
      if (!t.childElementCount)
        t.appendChild(el("div", "day none", "nothing saved in this conversation yet"));
      status("");
    } finally {
      if (busyGen === mine) busyGen = -1;
    }
  }

  refreshConvos().catch(e => status(e.message));
  setInterval(() => refreshConvos().catch(e => status(e.message)), 3000);
  setInterval(() => poll().catch(e => status(e.message)), 1000);
})();
