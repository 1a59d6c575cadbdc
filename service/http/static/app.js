// The playground: reads the controls, calls the API and puts every answer in the gallery.

import { ApiError, images, key, model, setKey } from "./api.js";
import { Editor } from "./editor.js";
import { Gallery } from "./gallery.js";
import { Regions } from "./regions.js";

const $ = (id) => document.getElementById(id);
const editor = new Editor($("picture"), $("mask"));
const regions = new Regions($("regions"), $("region-list"));
const gallery = new Gallery($("gallery"), {
  seed: (seed) => {
    $("seed").value = seed;
    $("seed").focus();
  },
  edit: (src) => usePicture(src),
  vary: async (src) => vary(await (await fetch(src)).blob()),
});

// ---- the controls

function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

function size() {
  return `${$("width").value}x${$("height").value}`;
}

// The sampler knobs every endpoint takes; empty fields are left to the model's defaults.
function knobs() {
  const out = { seed: numberOf("seed"), steps: numberOf("steps"), guidance_scale: numberOf("guidance") };
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined));
}

function many() {
  return { ...knobs(), n: numberOf("n") ?? 1 };
}

async function pictureForm(picture, fields) {
  const form = new FormData();
  form.append("image", picture, "picture.png");
  for (const [name, value] of Object.entries({ ...many(), ...fields })) form.append(name, String(value));
  return form;
}

// ---- requests

async function run(endpoint, count, body, options = {}) {
  $("error").hidden = true;
  const group = gallery.group(`${endpoint} · ${count} image${count === 1 ? "" : "s"}`, count, options);
  try {
    group.fill(await images(`/v1/images/${endpoint}`, body));
  } catch (error) {
    const shown = error instanceof ApiError ? error : new ApiError(0, String(error));
    group.fail(shown);
    showError(shown);
  }
}

function showError(error) {
  $("error").textContent = error.status ? `${error.status}: ${error.message}` : error.message;
  $("error").hidden = false;
}

function needPicture() {
  if (editor.loaded) return true;
  showError(new ApiError(0, "upload a picture, or press edit under a picture in the gallery, first"));
  return false;
}

$("generate").addEventListener("click", () => {
  const negative = $("negative").value.trim();
  const body = { ...many(), prompt: $("prompt").value, size: size() };
  if (negative) body.negative_prompt = negative;
  run("generations", body.n, body);
});

$("inpaint").addEventListener("click", async () => {
  if (!needPicture()) return;
  const form = await pictureForm(await editor.pictureBlob(), { prompt: $("prompt").value });
  form.append("mask", await editor.maskBlob(), "mask.png");
  run("edits", Number(form.get("n")), form);
});

const SIDES = ["left", "right", "up", "down"];

$("outpaint").addEventListener("click", async () => {
  if (!needPicture()) return;
  const pads = Object.fromEntries(SIDES.map((side) => [side, numberOf(`pad-${side}`) ?? 0]));
  const form = await pictureForm(await editor.pictureBlob(), { prompt: $("prompt").value, ...pads });
  run("outpaints", Number(form.get("n")), form);
});

async function vary(picture) {
  const form = await pictureForm(picture, { size: size() });
  run("variations", Number(form.get("n")), form);
}

$("vary").addEventListener("click", async () => {
  if (needPicture()) vary(await editor.pictureBlob());
});

$("restyle").addEventListener("click", async () => {
  if (!needPicture()) return;
  const form = await pictureForm(await editor.pictureBlob(), { prompt: $("prompt").value, strength: $("strength").value });
  run("structural-edits", Number(form.get("n")), form);
});

$("interpolate").addEventListener("click", () => {
  const frames = numberOf("frames") ?? 6;
  const body = { ...knobs(), start_prompt: $("prompt").value, end_prompt: $("end-prompt").value, frames, mode: $("mode").value, size: size() };
  run("interpolations", frames, body, { strip: true });
});

$("compose").addEventListener("click", () => {
  const body = { ...many(), regions: regions.request(), size: size() };
  run("compositions", body.n, body);
});

// ---- the picture editor's controls

async function usePicture(src) {
  await editor.load(src);
  const { width, height } = editor.size;
  $("picture-size").textContent = `${width}×${height}; paint over the parts to draw anew`;
  showOutpaintSize();
  selectTab("picture");
}

$("upload").addEventListener("change", () => {
  const file = $("upload").files[0];
  if (file) usePicture(URL.createObjectURL(file)).catch(() => showError(new ApiError(0, "that file is not a picture")));
});

for (const [id, erasing] of [["brush", false], ["eraser", true]]) {
  $(id).addEventListener("click", () => {
    editor.erasing = erasing;
    $("brush").setAttribute("aria-pressed", String(!erasing));
    $("eraser").setAttribute("aria-pressed", String(erasing));
  });
}
$("brush-size").addEventListener("input", () => {
  editor.radius = Number($("brush-size").value) / 2;
});
editor.radius = Number($("brush-size").value) / 2;
$("clear-mask").addEventListener("click", () => editor.clear());

function showOutpaintSize() {
  if (!editor.loaded) return;
  const pad = (side) => numberOf(`pad-${side}`) ?? 0;
  const { width, height } = editor.size;
  $("outpaint-size").textContent = `the new canvas: ${width + pad("left") + pad("right")}×${height + pad("up") + pad("down")}`;
}
for (const side of SIDES) $(`pad-${side}`).addEventListener("input", showOutpaintSize);

// ---- compositions

$("add-region").addEventListener("click", () => regions.add($("prompt").value));
for (const id of ["width", "height"]) $(id).addEventListener("change", () => regions.shape(Number($("width").value), Number($("height").value)));

// ---- tabs

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.tab === name));
  for (const panel of document.querySelectorAll(".panel")) panel.hidden = panel.dataset.panel !== name;
}
for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));

// ---- the API key, where the service asks for one

$("api-key").value = key();
$("api-key").addEventListener("change", () => setKey($("api-key").value.trim()));

// ---- start: the model's sizes (retried until the model answers, or a key is given)

async function start() {
  try {
    const card = await model();
    const multiple = card.size_multiple;
    $("model").textContent = `${card.id} · ${card.image_size}×${card.image_size} native`;
    for (const id of ["width", "height"]) {
      const options = [];
      for (let side = 2 * multiple; side <= 4 * card.image_size; side += multiple) options.push(new Option(String(side), String(side), false, side === card.image_size));
      $(id).replaceChildren(...options);
    }
    for (const side of SIDES) $(`pad-${side}`).step = String(multiple);
    regions.shape(card.image_size, card.image_size);
    $("error").hidden = true;
    document.body.dataset.ready = "true";
  } catch (error) {
    $("model").textContent = "the model is not ready";
    showError(error instanceof ApiError ? error : new ApiError(0, String(error)));
    setTimeout(start, 2000);
  }
}

start();
