/* Data Machines: progressive enhancement, no framework, no build step.
   (a) zoom and pan on .diagram, (b) the step control over [data-steps] + #steps-data,
   (c) live updates of [data-poll-url]. Pages work without it. Shapes: docs/diagrams.md. */
(function () {
  "use strict";

  var TERMINAL = ["finished", "canceled"];
  var PATH_CLASSES = ["visited", "taken", "faded", "current"];
  var FIT_FLOOR = 0.45;  // a diagram opens fitted to its box, but never below this scale

  /* (a) Zoom and pan ------------------------------------------------------------------- */

  function setupZoom(figure) {
    var box = figure.querySelector(".diagram");
    var svg = box && box.querySelector("svg");
    if (!svg) return;
    var natural = parseFloat(svg.getAttribute("data-width") || "0") * 4 / 3 ||
                  svg.viewBox.baseVal.width * 4 / 3;
    var originalStyle = svg.getAttribute("style") || "";
    var toolbar = figure.querySelector(".diagram-toolbar");
    var level = figure.querySelector(".zoom-level");

    function showLevel() {
      if (level) level.textContent = Math.round(svg.getBoundingClientRect().width / natural * 100) + "%";
    }

    function zoomBy(factor, clientX, clientY) {
      var rect = box.getBoundingClientRect();
      var fx = (clientX === undefined ? rect.width / 2 : clientX - rect.left);
      var fy = (clientY === undefined ? rect.height / 2 : clientY - rect.top);
      var before = svg.getBoundingClientRect().width;
      var width = Math.max(natural * 0.2, Math.min(natural * 4, before * factor));
      var ratio = width / before;
      svg.style.maxWidth = "none";
      svg.style.minWidth = "0";
      svg.style.width = width + "px";
      box.classList.add("is-zoomed");
      box.scrollLeft = (box.scrollLeft + fx) * ratio - fx;
      box.scrollTop = (box.scrollTop + fy) * ratio - fy;
      figure.setAttribute("data-user-zoomed", "");
      showLevel();
    }

    // Fitted: the whole picture in the box's width (never larger than drawn), but not so
    // small that its text is unreadable (FIT_FLOOR); then the current state is scrolled
    // to the middle of the box, so the picture opens showing where the execution is.
    function fit() {
      var width = Math.max(natural * FIT_FLOOR, Math.min(natural, box.clientWidth - 2));
      svg.setAttribute("style", originalStyle);
      svg.style.maxWidth = "none";
      svg.style.minWidth = "0";
      svg.style.width = width + "px";
      box.classList.toggle("is-zoomed", width > box.clientWidth);
      centreOnCurrent();
      showLevel();
    }

    function centreOnCurrent() {
      var current = svg.querySelector("g.node.current");
      box.scrollLeft = 0;
      box.scrollTop = 0;
      if (!current) return;
      var boxRect = box.getBoundingClientRect(), rect = current.getBoundingClientRect();
      box.scrollLeft = rect.left - boxRect.left + rect.width / 2 - box.clientWidth / 2;
      box.scrollTop = rect.top - boxRect.top + rect.height / 2 - box.clientHeight / 2;
    }

    function reset() { figure.removeAttribute("data-user-zoomed"); fit(); }

    if (toolbar) {
      toolbar.hidden = false;
      toolbar.addEventListener("click", function (event) {
        var button = event.target.closest("[data-zoom]");
        if (!button) return;
        var how = button.getAttribute("data-zoom");
        if (how === "reset") reset(); else zoomBy(how === "in" ? 1.25 : 0.8);
      });
    }
    fit();
    var resized = null;
    window.addEventListener("resize", function () {
      // Refit on a real width change (a phone turned), unless the user zoomed by hand.
      clearTimeout(resized);
      resized = setTimeout(function () {
        if (!figure.hasAttribute("data-user-zoomed")) fit(); else showLevel();
      }, 150);
    });

    // Ctrl/Cmd + wheel (and trackpad pinch, which browsers report the same way) zooms
    // around the pointer; a plain wheel keeps scrolling the page.
    box.addEventListener("wheel", function (event) {
      if (!event.ctrlKey && !event.metaKey) return;
      event.preventDefault();
      zoomBy(Math.exp(-event.deltaY * 0.002), event.clientX, event.clientY);
    }, { passive: false });

    box.addEventListener("keydown", function (event) {
      if (event.key === "+" || event.key === "=") { zoomBy(1.25); event.preventDefault(); }
      else if (event.key === "-") { zoomBy(0.8); event.preventDefault(); }
      else if (event.key === "0") { reset(); event.preventDefault(); }
    });

    // Drag to pan when the picture is larger than its box.
    var drag = null;
    box.addEventListener("pointerdown", function (event) {
      if (event.button !== 0 || event.target.closest("a")) return;
      if (box.scrollWidth <= box.clientWidth && box.scrollHeight <= box.clientHeight) return;
      drag = { x: event.clientX, y: event.clientY, left: box.scrollLeft, top: box.scrollTop, id: event.pointerId };
    });
    box.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.id) return;
      var dx = event.clientX - drag.x, dy = event.clientY - drag.y;
      if (!box.classList.contains("is-dragging") && Math.abs(dx) + Math.abs(dy) < 4) return;
      if (!box.classList.contains("is-dragging")) {
        box.classList.add("is-dragging");
        box.setPointerCapture(event.pointerId);
      }
      box.scrollLeft = drag.left - dx;
      box.scrollTop = drag.top - dy;
    });
    function endDrag() { drag = null; box.classList.remove("is-dragging"); }
    box.addEventListener("pointerup", endDrag);
    box.addEventListener("pointercancel", endDrag);
  }

  /* (b) The step control ---------------------------------------------------------------- */

  function readSteps() {
    var script = document.getElementById("steps-data");
    if (!script) return null;
    var data = JSON.parse(script.textContent);
    if (typeof data === "string") data = JSON.parse(data);  // a view passed a JSON string
    return Array.isArray(data) ? data : (data && data.steps) || null;
  }

  function highlight(svg, step) {
    var states = new Set(step.states || []);
    var edges = new Set(step.edges || []);
    var last = (step.edges || [])[(step.edges || []).length - 1];
    svg.querySelectorAll("g.node[id], g.edge[id]").forEach(function (g) {
      var id = g.id, on = false, current = false;
      if (id === "start" || id === "edge-start") return;
      if (id.indexOf("state-") === 0) {
        current = id.slice(6) === step.current;
        on = current || states.has(id.slice(6));
      } else if (id.indexOf("invoke-") === 0 || id.indexOf("decision-") === 0) {
        var inEdge = "edge-" + id.slice(id.indexOf("-") + 1);  // same suffix as its edge
        on = edges.has(inEdge);
        current = inEdge === last && (step.status === "invoking" || step.status === "running");
      } else {
        on = edges.has(id);
      }
      PATH_CLASSES.forEach(function (name) { g.classList.remove(name); });
      Array.from(g.classList).forEach(function (name) {
        if (name.indexOf("status-") === 0) g.classList.remove(name);
      });
      var isEdge = g.classList.contains("edge");
      g.classList.add(on ? (isEdge ? "taken" : "visited") : "faded");
      if (current) g.classList.add("current", "status-" + step.status);
    });
    // Step badges (machines.diagrams marks each badge's cell and number): those after the
    // selected step are hidden.
    svg.querySelectorAll(".step-badge[data-step]").forEach(function (badge) {
      var later = parseInt(badge.getAttribute("data-step"), 10) > (step.n || 0);
      badge.classList.toggle("is-later", later);
      badge.style.visibility = later ? "hidden" : "";
    });
  }

  function renderContext(target, step) {
    var changes = step.changes || {};
    var added = new Set(changes.added || []), changed = new Set(changes.changed || []);
    var removed = changes.removed || {};
    var context = step.context || {};
    var keys = Object.keys(context), removedKeys = Object.keys(removed);
    target.textContent = "";
    target.appendChild(document.createTextNode("{\n"));
    function line(key, value, cls, comma) {
      var text = JSON.stringify(key) + ": " + JSON.stringify(value, null, 2).replace(/\n/g, "\n  ");
      var span = document.createElement(cls === "ctx-removed" ? "del" : (cls === "ctx-added" ? "ins" : "span"));
      if (cls) span.className = cls;
      span.textContent = text;
      target.appendChild(document.createTextNode("  "));
      target.appendChild(span);
      target.appendChild(document.createTextNode((comma ? "," : "") + "\n"));
    }
    keys.forEach(function (key, i) {
      var more = i < keys.length - 1 || removedKeys.length > 0;
      line(key, context[key], added.has(key) ? "ctx-added" : (changed.has(key) ? "ctx-changed" : ""), more);
    });
    removedKeys.forEach(function (key, i) { line(key, removed[key], "ctx-removed", i < removedKeys.length - 1); });
    target.appendChild(document.createTextNode("}"));
  }

  function setupSteps(control) {
    var steps = readSteps();
    if (!steps || !steps.length) return;
    var figure = control.closest("[data-diagram]") || document;
    var svg = figure.querySelector(".diagram svg");
    var range = control.querySelector("input[type=range]");
    var count = control.querySelector("[data-step-count]");
    var caption = control.querySelector("[data-step-caption]");
    var prev = control.querySelector("[data-step='-1']");
    var next = control.querySelector("[data-step='1']");
    var lastStep = steps[steps.length - 1].n || 0;
    range.max = String(steps.length - 1);
    range.value = String(steps.length - 1);
    control.hidden = false;

    function show(index, fromUser) {
      index = Math.max(0, Math.min(steps.length - 1, index));
      var step = steps[index];
      range.value = String(index);
      // Counted in steps (the start is step 0, not one of them): the last reads
      // "step 10 of 10" when there are ten, however many the page's list leaves out.
      var said = step.n ? "step " + step.n + " of " + lastStep : "the start";
      if (count) count.textContent = said;
      range.setAttribute("aria-valuetext", said);
      if (caption) caption.textContent = step.caption || "";
      if (prev) prev.disabled = index === 0;
      if (next) next.disabled = index === steps.length - 1;
      if (!fromUser) return;
      document.body.classList.toggle("is-stepping-back", index < steps.length - 1);
      if (svg) highlight(svg, step);
      document.querySelectorAll("[data-seq]").forEach(function (item) {
        var seq = parseInt(item.getAttribute("data-seq"), 10);
        item.classList.toggle("is-selected", seq === step.seq);
        item.classList.toggle("is-future", seq > step.seq);
      });
      document.querySelectorAll("[data-step-context]").forEach(function (target) {
        renderContext(target, step);
      });
      document.querySelectorAll("[data-step-context-title]").forEach(function (title) {
        title.textContent = step.n ? "after step " + step.n : "at the start";
      });
    }

    range.addEventListener("input", function () { show(parseInt(range.value, 10), true); });
    control.addEventListener("click", function (event) {
      var button = event.target.closest("[data-step]");
      if (button) show(parseInt(range.value, 10) + parseInt(button.getAttribute("data-step"), 10), true);
    });
    // Clicking a timeline sentence selects the last step at or before it.
    document.querySelectorAll("[data-seq]").forEach(function (item) {
      item.addEventListener("click", function (event) {
        // Grouped items nest [data-seq]: only the innermost one answers; summaries just open.
        if (event.target.closest("[data-seq]") !== item) return;
        if (event.target.closest("a, button, form, summary")) return;
        var seq = parseInt(item.getAttribute("data-seq"), 10), found = 0;
        steps.forEach(function (step, i) { if (step.seq <= seq) found = i; });
        show(found, true);
      });
    });
    show(steps.length - 1, false);
  }

  /* (c) Live updates ---------------------------------------------------------------------- */

  var SCROLL_KEY = "dm-scroll:" + location.pathname + location.search;

  function restoreScroll() {
    var saved = sessionStorage.getItem(SCROLL_KEY);
    if (saved === null) return;
    sessionStorage.removeItem(SCROLL_KEY);
    window.scrollTo(0, parseInt(saved, 10) || 0);
  }

  function userIsBusy() {
    var active = document.activeElement;
    var typing = active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName) && active.type !== "range";
    return typing || document.body.classList.contains("is-stepping-back");
  }

  function setupPolling(element) {
    var url = element.getAttribute("data-poll-url");
    var version = element.getAttribute("data-poll-version");
    var status = element.getAttribute("data-poll-status") || "";
    var notice = document.querySelector("[data-poll-notice]");
    var delay = 2000, timer = null;
    if (TERMINAL.indexOf(status) >= 0) return;

    function reload() {
      sessionStorage.setItem(SCROLL_KEY, String(window.scrollY));
      location.reload();
    }
    if (notice) {
      notice.addEventListener("click", function (event) {
        if (event.target.closest("button")) reload();
      });
    }

    function poll() {
      timer = null;
      if (document.hidden) return;  // resumes on visibilitychange
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.json();
        })
        .then(function (data) {
          delay = 2000;
          if (String(data.version) !== String(version)) {
            if (userIsBusy() && notice) { notice.hidden = false; return; }  // don't yank the page
            reload();
            return;
          }
          if (TERMINAL.indexOf(data.status) < 0) schedule();
        })
        .catch(function () { delay = Math.min(delay * 2, 30000); schedule(); });
    }
    function schedule() { if (!timer) timer = setTimeout(poll, delay); }
    document.addEventListener("visibilitychange", function () { if (!document.hidden) schedule(); });
    schedule();
  }

  /* (d) Times ------------------------------------------------------------------------------ */
  // The browser's time zone goes to the server in a cookie (accounts/timezones.py), so the
  // next pages are in it; until then (and without JS) times say "UTC" plainly.
  function sendTimeZone() {
    var zone;
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
    if (!zone || !/^[A-Za-z0-9_+\-\/]{1,64}$/.test(zone)) return;
    if (document.cookie.split("; ").indexOf("dm_tz=" + encodeURIComponent(zone)) >= 0) return;
    document.cookie = "dm_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax";
  }

  // machines/words.py duration() and relative(), kept the same.
  function duration(seconds) {
    if (seconds < 0.9995) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return String(Number(seconds.toPrecision(3))) + " s";
    var minutes = seconds / 60;
    if (minutes < 60) return Math.round(minutes) + " min";
    minutes = Math.round(minutes);
    var hours = Math.floor(minutes / 60); minutes = minutes % 60;
    if (hours < 48) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    return Math.floor(hours / 24) + " days";
  }
  function relative(seconds) {
    if (Math.abs(seconds) < 1) return "just now";
    var far = Math.abs(seconds) < 59.5 ? Math.round(Math.abs(seconds)) + " s" : duration(Math.abs(seconds));
    return seconds < 0 ? "in " + far : far + " ago";
  }

  // Every "· 3 min ago" / "· in 29 days" stays true; countdowns (the banner's) tick each
  // second, whole seconds while under a minute.
  function tickTimes() {
    var items = document.querySelectorAll("[data-rel]");
    if (!items.length) return;
    var ticks = 0;
    function update() {
      var now = Date.now() / 1000;
      items.forEach(function (item) {
        if (!item.hasAttribute("data-countdown") && ticks % 30) return;
        var seconds = now - parseFloat(item.getAttribute("data-rel"));
        if (item.hasAttribute("data-countdown") && seconds < 0 && seconds > -60) seconds = Math.floor(seconds);
        item.textContent = (item.hasAttribute("data-countdown") && seconds >= 0) ? "due now" : relative(seconds);
      });
      ticks += 1;
    }
    update();
    setInterval(update, 1000);
  }

  // A machine's heatmap: clicking a state lists the executions in it (the heatmap table's
  // links do the same without script).
  function setupStateFilter(section) {
    section.addEventListener("click", function (event) {
      var node = event.target.closest("g.node.state[id^='state-']");
      // (graphviz wraps a node in an <a> for its tooltip; only a real link is left alone)
      if (!node || event.target.closest("a[href], a[*|href]")) return;
      var query = new URLSearchParams(window.location.search);
      query.set("state", node.id.slice("state-".length));
      query.delete("page");
      window.location.assign("?" + query.toString() + "#executions-title");
    });
  }

  function init() {
    restoreScroll();
    sendTimeZone();
    tickTimes();
    document.querySelectorAll("[data-diagram]").forEach(setupZoom);
    document.querySelectorAll("[data-steps]").forEach(setupSteps);
    document.querySelectorAll("[data-poll-url][data-poll-version]").forEach(setupPolling);
    document.querySelectorAll("[data-filter-by-state]").forEach(setupStateFilter);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

/* (d) Live execution lists (issue 15) ---------------------------------------------------
   A [data-live-list] region (the execution table and its pages) is fetched again from the
   page's own URL every 10 s while the tab is visible, and replaced when what it
   shows changed. Nothing is replaced while keyboard focus is inside it; a polite status
   line says that the list was updated. Kept apart from (a)-(c) above. */
(function () {
  "use strict";

  var LIST_DELAY = window.dmListDelay || 10000, LIST_MAX_DELAY = 120000;  // tests set dmListDelay

  function liveListStatus(region) {
    var status = document.createElement("p");
    status.className = "visually-hidden";
    status.setAttribute("role", "status");
    region.parentNode.insertBefore(status, region.nextSibling);
    return status;
  }

  function setupLiveList(region, index) {
    var delay = LIST_DELAY, timer = null, status = null;

    function poll() {
      timer = null;
      if (document.hidden) return;  // resumes on visibilitychange
      fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok || response.redirected) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html")
            .querySelectorAll("[data-live-list]")[index];
          if (!fresh) throw new Error("no list in the answer");
          delay = LIST_DELAY;
          // Not while the reader is in it, nor while rows are selected for an operation.
          if (fresh.innerHTML.trim() !== region.innerHTML.trim() &&
              !region.contains(document.activeElement) && !region.querySelector("input:checked")) {
            region.replaceChildren.apply(region, Array.from(fresh.childNodes).map(function (node) {
              return document.importNode(node, true);
            }));
            status = status || liveListStatus(region);
            status.textContent = "The list was updated.";
          }
          schedule();
        })
        .catch(function () { delay = Math.min(delay * 2, LIST_MAX_DELAY); schedule(); });
    }
    function schedule() { if (!timer && !document.hidden) timer = setTimeout(poll, delay); }
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { clearTimeout(timer); timer = null; } else schedule();
    });
    schedule();
  }

  function initLiveLists() {
    document.querySelectorAll("[data-live-list]").forEach(setupLiveList);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", initLiveLists);
  else initLiveLists();
})();

/* (e) Timeline sentences by keyboard (issue 15) -------------------------------------------
   A sentence that selects its step on a click (see setupSteps) is also a tab stop, and
   Enter or Space selects it, so the step control is not for mouse users only. */
(function () {
  "use strict";

  function setupTimelineKeys() {
    if (!document.querySelector("[data-steps]")) return;
    document.querySelectorAll(".timeline li[data-seq]").forEach(function (item) {
      if (!item.hasAttribute("tabindex")) item.setAttribute("tabindex", "0");
      item.addEventListener("keydown", function (event) {
        if (event.target !== item || (event.key !== "Enter" && event.key !== " ")) return;
        event.preventDefault();
        item.click();
      });
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setupTimelineKeys);
  else setupTimelineKeys();
})();
