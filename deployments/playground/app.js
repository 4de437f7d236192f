"use strict";
// clip-serve playground. It calls only the public API (GET v1/models, POST v1/classify,
// POST v1/rerank) with the headers any client sends. Everything that comes from the server or
// the user is rendered as text nodes (never innerHTML): labels and error messages are user text.

(() => {
  const KEY_STORAGE = "clip-serve-api-key"; // sessionStorage only: gone when the tab closes
  const $ = (id) => document.getElementById(id);

  // An element with attributes and children; strings become text nodes.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    node.append(...children);
    return node;
  }

  class ApiError extends Error {
    constructor(status, error) {
      super(String(error.message || "request failed"));
      this.status = status;
      this.type = error.type || null;
      this.param = error.param || null;
      this.code = error.code || null;
    }
  }

  async function api(path, body) {
    const headers = {};
    const key = $("api-key").value.trim();
    if (key) headers.Authorization = "Bearer " + key;
    const init = { method: "GET", headers };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init); // relative: works behind a path prefix too
    } catch (err) {
      throw new ApiError(0, { message: "could not reach the server: " + err.message });
    }
    const text = await response.text();
    let payload = null;
    try {
      payload = JSON.parse(text);
    } catch (_) {
      payload = null;
    }
    if (!response.ok) {
      const error = payload && typeof payload.error === "object" && payload.error ? payload.error
        : { message: text || response.statusText };
      throw new ApiError(response.status, error);
    }
    if (payload === null) throw new ApiError(response.status, { message: "the server's answer is not JSON" });
    return payload;
  }

  // ---- errors ----------------------------------------------------------------------------
  function clearError() {
    const box = $("error");
    box.hidden = true;
    box.replaceChildren();
  }

  function showError(err) {
    const box = $("error");
    const status = err instanceof ApiError ? err.status : 0;
    box.dataset.status = String(status);
    box.dataset.code = (err && err.code) || "";
    box.dataset.param = (err && err.param) || "";
    const details = [];
    if (err.type) details.push(el("span", {}, "type ", el("code", {}, err.type)));
    if (err.code) details.push(el("span", {}, "code ", el("code", {}, String(err.code))));
    if (err.param) details.push(el("span", {}, "param ", el("code", {}, err.param)));
    box.replaceChildren(
      el("strong", { class: "status" }, status ? "HTTP " + status : "Error"),
      " ",
      el("span", { class: "message" }, err.message),
    );
    if (details.length) box.append(el("div", { class: "details" }, ...details));
    if (status === 401 || status === 403) {
      box.append(el("div", { class: "hint" }, status === 401
        ? "The server requires a valid API key: enter it in the API key field above."
        : "This API key is not allowed to do that."));
    }
    box.hidden = false;
  }

  // ---- models ----------------------------------------------------------------------------
  let models = [];

  function modelLabel(m) {
    const dims = m.embedding_dimension ? m.embedding_dimension + "-d" : "?-d";
    return [m.id, dims, (m.towers || []).join("+"), m.ready ? "ready" : "loading"].join(" · ");
  }

  function showModelInfo() {
    const m = models.find((x) => x.id === $("model").value);
    const info = $("model-info");
    if (!m) {
      info.textContent = "";
      return;
    }
    const facts = [
      ["towers", (m.towers || []).join(", ")],
      ["embedding", m.embedding_dimension],
      ["image size", m.image_size ? m.image_size.join("x") : null],
      ["context", m.context_length],
      ["backend", m.backend],
      ["dtype", m.dtype],
      ["device", m.device],
      ["logit scale", typeof m.logit_scale === "number" ? m.logit_scale.toFixed(2) : null],
      // How /v1/classify scores: softmax over the labels (CLIP) or a sigmoid per label (SigLIP).
      ["scores", m.score_function === "sigmoid" ? "sigmoid per label (bias " +
        (typeof m.logit_bias === "number" ? m.logit_bias.toFixed(2) : "?") + ")"
        : m.score_function === "softmax" ? "softmax over labels" : null],
    ].filter(([, v]) => v !== null && v !== undefined && v !== "");
    info.textContent = facts.map(([k, v]) => k + ": " + v).join(" · ") + (m.ready ? "" : " · still loading");
  }

  async function loadModels() {
    const select = $("model");
    const previous = select.value;
    try {
      const list = await api("v1/models");
      models = Array.isArray(list.data) ? list.data : [];
      select.replaceChildren(...models.map((m) => el("option", { value: m.id }, modelLabel(m))));
      if (models.some((m) => m.id === previous)) select.value = previous;
      clearError();
    } catch (err) {
      showError(err);
    }
    showModelInfo();
  }

  // ---- image pickers (file input + drag and drop) ----------------------------------------
  function imagePicker(inputId, dropId, previewId) {
    const picker = { files: [], urls: [] };
    const set = (files) => {
      picker.urls.forEach((u) => URL.revokeObjectURL(u));
      picker.files = files.filter((f) => !f.type || f.type.startsWith("image/"));
      picker.urls = picker.files.map((f) => URL.createObjectURL(f));
      $(previewId).replaceChildren(...picker.files.map((f, i) =>
        el("figure", {}, el("img", { src: picker.urls[i], alt: "" }), el("figcaption", {}, f.name))));
    };
    $(inputId).addEventListener("change", (e) => set(Array.from(e.target.files)));
    const drop = $(dropId);
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      set(Array.from(e.dataTransfer.files));
    });
    return picker;
  }

  function dataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  const imageItems = (files) => Promise.all(files.map(async (f) => ({ image: await dataUrl(f) })));

  // Run one API action with its button disabled; any error is shown, never swallowed.
  async function run(buttonId, picker, action) {
    clearError();
    if (!picker.files.length) {
      showError(new Error("choose or drop at least one image first"));
      return;
    }
    const button = $(buttonId);
    button.disabled = true;
    document.body.classList.add("busy");
    try {
      await action({ files: picker.files.slice(), urls: picker.urls.slice() });
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
      document.body.classList.remove("busy");
    }
  }

  // ---- classify --------------------------------------------------------------------------
  function parseLabels(text) {
    const parts = text.includes("\n") ? text.split("\n") : text.split(",");
    return parts.map((s) => s.trim()).filter((s) => s.length > 0);
  }

  function labelRow(p) {
    const fill = el("div", { class: "fill" });
    fill.style.width = (100 * p.score).toFixed(2) + "%"; // CSSOM, allowed by the CSP
    return el("div", { class: "row", "data-label": p.label, "data-score": p.score, "data-cosine": p.cosine },
      el("span", { class: "label", title: p.label }, p.label),
      el("div", { class: "bar" }, fill),
      el("span", { class: "num prob" }, p.score.toFixed(4)),
      el("span", { class: "num cos" }, p.cosine.toFixed(4)));
  }

  function renderClassification(response, snapshot) {
    const cards = response.data.map((item) => {
      const sorted = item.predictions.slice().sort((a, b) => b.score - a.score);
      const file = snapshot.files[item.index];
      return el("article", { class: "card", "data-index": item.index },
        el("img", { class: "thumb", src: snapshot.urls[item.index], alt: "" }),
        el("div", { class: "chart" },
          el("h3", {}, file ? file.name : "input " + item.index),
          el("div", { class: "row head" }, el("span", {}, "label"), el("span", {}, "probability"),
            el("span", { class: "num" }, "p"), el("span", { class: "num" }, "cosine")),
          ...sorted.map(labelRow)));
    });
    $("classify-results").replaceChildren(...cards);
  }

  function classify(event) {
    event.preventDefault();
    return run("classify-button", classifyPicker, async (snapshot) => {
      const body = { model: $("model").value, input: await imageItems(snapshot.files), labels: parseLabels($("labels").value) };
      const template = $("template").value;
      if (template.trim()) body.hypothesis_template = template;
      renderClassification(await api("v1/classify", body), snapshot);
    });
  }

  // ---- rank ------------------------------------------------------------------------------
  function renderRanking(response, snapshot) {
    const items = response.results.map((r, position) =>
      el("li", { class: "ranked", "data-index": r.index, "data-score": r.relevance_score },
        el("span", { class: "rank" }, "#" + (position + 1)),
        el("img", { class: "thumb", src: snapshot.urls[r.index], alt: "" }),
        el("span", { class: "name" }, snapshot.files[r.index].name),
        el("span", { class: "num score", title: "cosine similarity" }, r.relevance_score.toFixed(4))));
    $("rank-results").replaceChildren(...items);
  }

  function rank(event) {
    event.preventDefault();
    return run("rank-button", rankPicker, async (snapshot) => {
      const body = { model: $("model").value, query: $("query").value, documents: await imageItems(snapshot.files) };
      renderRanking(await api("v1/rerank", body), snapshot);
    });
  }

  // ---- tabs and wiring -------------------------------------------------------------------
  function selectTab(tab) {
    for (const t of document.querySelectorAll('[role="tab"]')) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      $(t.getAttribute("aria-controls")).hidden = !selected;
    }
  }

  const classifyPicker = imagePicker("classify-files", "classify-drop", "classify-previews");
  const rankPicker = imagePicker("rank-files", "rank-drop", "rank-previews");
  for (const tab of document.querySelectorAll('[role="tab"]')) tab.addEventListener("click", () => selectTab(tab));
  $("classify-form").addEventListener("submit", classify);
  $("rank-form").addEventListener("submit", rank);
  $("model").addEventListener("change", showModelInfo);
  $("reload-models").addEventListener("click", loadModels);
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  keyInput.addEventListener("input", () => {
    if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value);
    else sessionStorage.removeItem(KEY_STORAGE);
  });
  keyInput.addEventListener("change", loadModels); // a new key may unlock the model list
  loadModels();
})();
