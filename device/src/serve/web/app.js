// The Smoothface web app: four views (gallery, people, a person, search) and a media page over
// the JSON API. DOM nodes are built with el(), never from HTML strings, so no name or path can
// inject markup.
"use strict";

const view = document.getElementById("view");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function say(text, error = false) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = error ? "error" : "";
  m.hidden = !text;
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) { location.href = "/login"; throw new Error("log in first"); }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

const post = (path, body) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
});

function clock(s) {
  const t = Math.round(s);
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
}

function fileName(path) { return path.split("/").pop(); }

// A photo or video tile; `extra` adds lines under the picture.
function mediaTile(m, extra = [], cls = "") {
  const badge = m.kind === "video"
    ? el("span", { class: "badge" }, m.start_s != null ? `▶ ${clock(m.start_s)}–${clock(m.end_s)}`
      : m.duration_s != null ? `▶ ${clock(m.duration_s)}` : "▶ video")
    : null;
  return el("div", { class: `tile ${cls}`, dataset: { media: m.media ?? m.id, path: m.path } },
    el("a", { href: `#/media/${m.media ?? m.id}` },
      el("img", { src: `/api/media/${m.media ?? m.id}/thumbnail?size=320`, loading: "lazy", alt: fileName(m.path) }),
      badge),
    el("div", { class: "caption", title: m.path }, fileName(m.path)),
    extra);
}

function template(id) {
  view.replaceChildren(document.getElementById(id).content.cloneNode(true));
}

// Gallery: newest first, 60 at a time, the next page loaded when the end scrolls into view.
async function showGallery() {
  template("tpl-gallery");
  const grid = view.querySelector(".media-grid");
  const more = view.querySelector(".more");
  let offset = 0, total = Infinity, loading = false;
  async function page() {
    if (loading || offset >= total) return;
    loading = true;
    const r = await api(`/api/media?offset=${offset}&limit=60`);
    total = r.total;
    offset += r.media.length;
    view.querySelector(".count").textContent = `${total} photos and videos`;
    grid.append(...r.media.map(m => mediaTile(m, m.faces ? [el("div", { class: "caption hint" }, m.faces === 1 ? "1 face" : `${m.faces} faces`)] : [])));
    loading = false;
    if (total === 0) grid.replaceWith(el("p", {}, "The gallery is empty: index a folder (serve --library DIR) and it fills here."));
  }
  new IntersectionObserver(entries => { if (entries.some(e => e.isIntersecting)) page().catch(e => say(e.message, true)); })
    .observe(more);
  await page();
}

// People: a face per person, names edited in place, merge by selecting.
async function showPeople() {
  template("tpl-people");
  const grid = view.querySelector(".people-grid");
  const merge = view.querySelector("#merge");
  const selected = new Set();
  const r = await api("/api/people");
  view.querySelector(".count").textContent = `${r.people.length} people`;
  for (const p of r.people) {
    const name = el("input", { class: "name", value: p.name ?? "", placeholder: "Add a name", "aria-label": "Name" });
    name.addEventListener("change", async () => {
      try { say((await post(`/api/people/${p.id}/name`, { name: name.value.trim() })).summary); }
      catch (e) { say(e.message, true); }
    });
    const tick = el("input", { type: "checkbox", class: "select", "aria-label": "Select to merge" });
    const card = el("div", { class: "tile person-card", dataset: { id: p.id } },
      el("a", { href: `#/person/${p.id}` },
        el("img", { src: p.representative ? `/api/faces/${p.representative.face}/crop?size=160` : "", loading: "lazy", alt: p.name ?? `person ${p.id}` })),
      tick, name,
      el("div", { class: "caption hint" }, `${p.media} photos`));
    tick.addEventListener("change", () => {
      if (tick.checked) selected.add(p.id); else selected.delete(p.id);
      card.classList.toggle("selected", tick.checked);
      merge.disabled = selected.size < 2;
    });
    grid.append(card);
  }
  await showSamePerson(r.people);
  merge.addEventListener("click", async () => {
    const [into, ...others] = [...selected];
    try { say((await post(`/api/people/${into}/merge`, { others })).summary); await showPeople(); }
    catch (e) { say(e.message, true); }
  });
  view.querySelector("#undo").addEventListener("click", async () => {
    try { say((await post("/api/people/undo", {})).summary); await showPeople(); }
    catch (e) { say(e.message, true); }
  });
}

// "Same person?": pairs of people that may be one, best first; yes merges them, no keeps them
// apart (no suggestion pairs them again). Both answers can be undone.
async function showSamePerson(people) {
  const section = view.querySelector(".same-person");
  const pairs = view.querySelector(".pairs");
  const names = new Map(people.map(p => [p.id, p.name ?? `person ${p.id}`]));
  const r = await api("/api/people/suggestions?top=6");
  section.hidden = r.suggestions.length === 0;
  for (const s of r.suggestions) {
    const face = (id, person) => el("figure", {},
      el("img", { src: `/api/faces/${id}/crop?size=160`, loading: "lazy", alt: names.get(person) }),
      el("figcaption", {}, names.get(person)));
    const answer = (path, body) => async () => {
      try { say((await post(path, body)).summary); await showPeople(); }
      catch (e) { say(e.message, true); }
    };
    pairs.append(el("div", { class: "tile pair-card", dataset: { a: s.a, b: s.b } },
      el("div", { class: "faces" }, face(s.a_face, s.a), face(s.b_face, s.b)),
      el("div", { class: "caption hint" }, `Same person? (${s.score.toFixed(2)})`),
      el("div", { class: "actions" },
        el("button", { class: "yes", type: "button", onclick: answer(`/api/people/${s.a}/merge`, { others: [s.b] }) }, "✓ Yes"),
        el("button", { class: "no", type: "button", onclick: answer(`/api/people/${s.a}/keep-apart`, { other: s.b }) }, "✗ No"))));
  }
}

// A person: their photos, then the suggestions to accept or reject.
async function showPerson(id) {
  template("tpl-person");
  const [p, r] = await Promise.all([api(`/api/people/${id}`), api(`/api/search/person/${id}?top=24`)]);
  const name = view.querySelector(".person-name");
  name.value = p.name ?? "";
  name.addEventListener("change", async () => {
    try { say((await post(`/api/people/${id}/name`, { name: name.value.trim() })).summary); }
    catch (e) { say(e.message, true); }
  });
  view.querySelector(".count").textContent = `${p.faces} faces in ${p.media} photos and videos`;
  const own = view.querySelector(".own"), suggestions = view.querySelector(".suggestions");
  for (const hit of r.results) {
    if (hit.assigned) { own.append(mediaTile(hit, [], "mine")); continue; }
    const tile = el("div", { class: "tile suggestion", dataset: { face: hit.face, media: hit.media } },
      el("a", { href: `#/media/${hit.media}` }, el("img", { src: `/api/faces/${hit.face}/crop?size=160`, loading: "lazy", alt: fileName(hit.path) })),
      el("div", { class: "caption" }, el("span", { class: "score" }, hit.score.toFixed(3)), " ", fileName(hit.path)));
    const decide = (path, body) => async () => {
      try { say((await post(path, body)).summary); tile.remove(); }
      catch (e) { say(e.message, true); }
    };
    tile.append(el("div", { class: "actions" },
      el("button", { class: "yes", type: "button", onclick: decide(`/api/faces/${hit.face}/move`, { person: Number(id) }) }, "✓ Yes"),
      el("button", { class: "no", type: "button", onclick: decide(`/api/people/${id}/reject`, { faces: [hit.face] }) }, "✗ No")));
    suggestions.append(tile);
  }
  if (!suggestions.children.length) suggestions.append(el("p", { class: "hint" }, "No other faces to suggest."));
}

// Search: the photo is sent as the request's body; the faces found are drawn on it to pick from.
function showSearch() {
  template("tpl-search");
  const input = view.querySelector("#search-file"), drop = view.querySelector("#drop");
  let file = null;
  async function search(face) {
    const results = view.querySelector("#results"), count = view.querySelector(".count");
    results.replaceChildren();
    count.textContent = "Searching…";
    try {
      const keep = view.querySelector("#keep").checked;
      const r = await api(`/api/search?face=${face}&top=48${keep ? "&keep=true" : ""}`, { method: "POST", body: file });
      if (r.kept) say(`Added to the gallery as ${r.kept}; it is being indexed.`);
      drawFaces(r.faces, face);
      count.textContent = `${r.results.length} best of ${r.faces_searched} faces searched`;
      results.append(...r.results.map(h => mediaTile(h, [el("div", { class: "caption" },
        el("span", { class: "score" }, h.score.toFixed(3)), h.person_name ? ` · ${h.person_name}` : "")], "result")));
    } catch (e) { count.textContent = ""; say(e.message, true); }
  }
  function drawFaces(faces, chosen) {
    const img = view.querySelector("#query-img"), boxes = view.querySelector("#query-boxes");
    const place = () => {
      const sx = img.clientWidth / img.naturalWidth, sy = img.clientHeight / img.naturalHeight;
      boxes.replaceChildren(...faces.map((f, i) => {
        const [x1, y1, x2, y2] = f.box;
        const b = el("button", { class: `face-box${i === chosen ? " chosen" : ""}`, type: "button", title: `face ${i}`, dataset: { face: i }, onclick: () => search(i) });
        Object.assign(b.style, { left: `${x1 * sx}px`, top: `${y1 * sy}px`, width: `${(x2 - x1) * sx}px`, height: `${(y2 - y1) * sy}px` });
        return b;
      }));
    };
    if (img.complete && img.naturalWidth) place(); else img.onload = place;
  }
  function choose(f) {
    if (!f) return;
    file = f;
    say("");
    view.querySelector("#query").hidden = false;
    view.querySelector("#query-img").src = URL.createObjectURL(f);
    view.querySelector("#query-boxes").replaceChildren();
    search(0);
  }
  input.addEventListener("change", () => choose(input.files[0]));
  drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files[0]); });
}

// One photo or video: large, with its faces and who they are.
async function showMedia(id) {
  template("tpl-media");
  const m = await api(`/api/media/${id}`);
  view.querySelector(".path").textContent = m.path;
  view.querySelector(".media-large img").src = `/api/media/${id}/thumbnail?size=1280`;
  view.querySelector(".faces").append(...m.faces.map(f => el("div", { class: "tile" },
    el("a", { href: f.person ? `#/person/${f.person}` : `#/media/${id}` },
      el("img", { src: `/api/faces/${f.id}/crop?size=160`, loading: "lazy", alt: `face ${f.face_index}` })),
    el("div", { class: "caption" }, f.person_name ?? (f.person ? `person ${f.person}` : "nobody yet"),
      f.start_s != null ? ` · ${clock(f.start_s)}–${clock(f.end_s)}` : ""))));
  view.querySelector(".forget").addEventListener("click", async () => {
    if (!confirm("Forget this file? Its faces are deleted from the gallery. The file stays where it is, and the next index run of its folder adds it back: move it out of the library to keep it out.")) return;
    try { await post("/api/forget", { media: [Number(id)] }); location.hash = "#/gallery"; }
    catch (e) { say(e.message, true); }
  });
}

async function route() {
  const [, name = "gallery", arg] = location.hash.split("/");
  say("");
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.view === name || (name === "person" && a.dataset.view === "people"));
  }
  try {
    if (name === "people") await showPeople();
    else if (name === "person") await showPerson(arg);
    else if (name === "search") showSearch();
    else if (name === "media") await showMedia(arg);
    else await showGallery();
  } catch (e) { say(e.message, true); }
}

// Index progress, polled: every 2 s while a run goes on, every 15 s otherwise.
let pollTimer = null;
async function pollIndex() {
  clearTimeout(pollTimer);
  let running = false;
  try {
    const s = await api("/api/index");
    running = s.running || s.queued;
    const box = document.getElementById("index-status");
    box.hidden = !running;
    if (s.current) {
      const c = s.current;
      document.getElementById("index-progress").max = Math.max(c.total, 1);
      document.getElementById("index-progress").value = c.done;
      document.getElementById("index-text").textContent =
        c.total ? `Indexing ${c.done}/${c.total} files · ${c.faces} faces` : "Looking for new files…";
    }
    document.getElementById("index-now").hidden = !s.libraries.length;
  } catch (e) { /* shown by the views */ }
  pollTimer = setTimeout(pollIndex, running ? 2000 : 15000);
}

document.getElementById("index-now").addEventListener("click", async () => {
  try { await post("/api/index", {}); say("Indexing the library folders."); pollIndex(); }
  catch (e) { say(e.message, true); }
});
// Log out: shown where the service asks for a token (ending the session on the service).
api("/api/status").then(s => { document.getElementById("logout").hidden = !s.token; }).catch(() => {});
window.addEventListener("hashchange", route);
route();
pollIndex();
