// The picture editor: a picture on one canvas and, over it, the inpainting mask on another, painted
// with a brush and rubbed out with an eraser (mouse, pen or touch).

export class Editor {
  constructor(picture, mask) {
    this.picture = picture;
    this.mask = mask;
    this.loaded = false;
    this.erasing = false;
    this.radius = 8;
    this.painted = false;
    this.#listen();
  }

  // Show the picture at `src` (a data URL, blob URL or file) at its own size, with an empty mask.
  async load(src) {
    const image = new Image();
    image.src = src;
    await image.decode();
    for (const canvas of [this.picture, this.mask]) {
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
    }
    this.picture.getContext("2d").drawImage(image, 0, 0);
    this.clear();
    this.loaded = true;
  }

  clear() {
    this.mask.getContext("2d").clearRect(0, 0, this.mask.width, this.mask.height);
    this.painted = false;
  }

  get size() {
    return { width: this.picture.width, height: this.picture.height };
  }

  pictureBlob() {
    return blob(this.picture);
  }

  // The API's mask: opaque everywhere except the painted pixels, which are transparent (repaint).
  maskBlob() {
    const out = document.createElement("canvas");
    out.width = this.mask.width;
    out.height = this.mask.height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.globalCompositeOperation = "destination-out";
    ctx.drawImage(this.mask, 0, 0);
    return blob(out);
  }

  #listen() {
    let last = null;
    const at = (event) => {
      const box = this.mask.getBoundingClientRect();
      return {
        x: ((event.clientX - box.left) * this.mask.width) / box.width,
        y: ((event.clientY - box.top) * this.mask.height) / box.height,
      };
    };
    this.mask.addEventListener("pointerdown", (event) => {
      if (!this.loaded) return;
      this.mask.setPointerCapture(event.pointerId);
      last = at(event);
      this.#stroke(last, last);
    });
    this.mask.addEventListener("pointermove", (event) => {
      if (last === null) return;
      const point = at(event);
      this.#stroke(last, point);
      last = point;
    });
    for (const end of ["pointerup", "pointercancel"]) {
      this.mask.addEventListener(end, () => {
        last = null;
      });
    }
  }

  #stroke(from, to) {
    const ctx = this.mask.getContext("2d");
    ctx.globalCompositeOperation = this.erasing ? "destination-out" : "source-over";
    ctx.strokeStyle = "#ff2d6f";
    ctx.lineWidth = this.radius * 2;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    if (!this.erasing) this.painted = true;
  }
}

function blob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}
