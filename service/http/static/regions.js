// Regions of a composition: boxes dragged on a canvas of the output's shape, each with its prompt.

const COLOURS = ["#ff2d6f", "#2d9cff", "#ffb02d", "#39d98a", "#b36bff", "#ff7a2d", "#2de0d0", "#e0e02d"];
const MAX_REGIONS = 8;

export class Regions {
  constructor(canvas, list, onChange) {
    this.canvas = canvas;
    this.list = list;
    this.onChange = onChange;
    this.regions = [];
    this.#listen();
  }

  // Give the canvas the output's aspect ratio (boxes are fractions, so they keep their place).
  shape(width, height) {
    this.canvas.height = Math.round((this.canvas.width * height) / width);
    this.#draw();
  }

  // Add a region; `box` is [left, top, right, bottom] as fractions, or null for the whole canvas.
  add(prompt, box = null) {
    if (this.regions.length >= MAX_REGIONS) return;
    const region = { prompt, box, colour: COLOURS[this.regions.length % COLOURS.length] };
    this.regions.push(region);
    this.#render();
  }

  // The API's regions: [{prompt, box}].
  request() {
    return this.regions.map(({ prompt, box }) => ({ prompt, box }));
  }

  #render() {
    this.list.replaceChildren(
      ...this.regions.map((region) => {
        const item = document.createElement("li");
        item.style.borderColor = region.colour;
        const input = document.createElement("input");
        input.type = "text";
        input.value = region.prompt;
        input.setAttribute("aria-label", "region prompt");
        input.addEventListener("input", () => {
          region.prompt = input.value;
        });
        const where = document.createElement("span");
        where.className = "muted";
        where.textContent = region.box ? region.box.map((v) => v.toFixed(2)).join(", ") : "everywhere";
        const remove = document.createElement("button");
        remove.textContent = "remove";
        remove.addEventListener("click", () => {
          this.regions.splice(this.regions.indexOf(region), 1);
          this.#render();
        });
        item.append(input, where, remove);
        return item;
      }),
    );
    this.#draw();
    this.onChange?.();
  }

  #draw(dragged = null) {
    const ctx = this.canvas.getContext("2d");
    const { width, height } = this.canvas;
    ctx.clearRect(0, 0, width, height);
    const boxes = this.regions.filter((r) => r.box).map((r) => [r.box, r.colour]);
    if (dragged) boxes.push([dragged, "#fff"]);
    for (const [[left, top, right, bottom], colour] of boxes) {
      ctx.fillStyle = `${colour}33`;
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.fillRect(left * width, top * height, (right - left) * width, (bottom - top) * height);
      ctx.strokeRect(left * width, top * height, (right - left) * width, (bottom - top) * height);
    }
  }

  #listen() {
    let start = null;
    let box = null;
    const at = (event) => {
      const rect = this.canvas.getBoundingClientRect();
      const clamp = (v) => Math.min(1, Math.max(0, v));
      return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
    };
    this.canvas.addEventListener("pointerdown", (event) => {
      this.canvas.setPointerCapture(event.pointerId);
      start = at(event);
    });
    this.canvas.addEventListener("pointermove", (event) => {
      if (start === null) return;
      const [x, y] = at(event);
      box = [Math.min(start[0], x), Math.min(start[1], y), Math.max(start[0], x), Math.max(start[1], y)];
      this.#draw(box);
    });
    this.canvas.addEventListener("pointerup", () => {
      if (box && box[2] - box[0] > 0.02 && box[3] - box[1] > 0.02) {
        this.add("", box.map((v) => Math.round(v * 1000) / 1000));
        this.list.lastChild?.querySelector("input").focus();
      } else {
        this.#draw();
      }
      start = null;
      box = null;
    });
  }
}
