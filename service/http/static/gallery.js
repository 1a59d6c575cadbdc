// The gallery: one group per request (newest first), its pictures in slots laid out before the answer
// comes, each with its seed (click to reuse), a download link and the actions on it.

export class Gallery {
  // actions: {seed(seed), edit(src), vary(src)}
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
  }

  // A group of `count` empty slots titled `title`; frames of an interpolation lie in one strip.
  group(title, count, { strip = false } = {}) {
    const section = element("section", strip ? "group strip" : "group");
    const header = element("header");
    header.append(element("h2", "", title), element("span", "latency muted", "working…"));
    const slots = Array.from({ length: count }, () => element("figure", "slot pending"));
    const grid = element("div", "pictures");
    grid.append(...slots);
    section.append(header, grid);
    this.root.prepend(section);
    return {
      fill: ({ images, ms }) => {
        header.lastChild.textContent = `${Math.round(ms)} ms`;
        images.forEach((image, i) => this.#picture(slots[i], image));
      },
      fail: (error) => {
        header.lastChild.textContent = error.ms === undefined ? "failed" : `failed after ${Math.round(error.ms)} ms`;
        section.classList.add("failed");
        grid.replaceChildren(element("p", "error", error.message));
      },
    };
  }

  #picture(slot, { src, seed }) {
    slot.classList.remove("pending");
    const img = element("img");
    img.src = src;
    img.alt = `seed ${seed}`;
    const seedButton = element("button", "seed", `seed ${seed}`);
    seedButton.title = "use this seed";
    seedButton.addEventListener("click", () => this.actions.seed(seed));
    const download = element("a", "download", "download");
    download.href = src;
    download.download = `paella-${seed}.png`;
    const edit = element("button", "edit", "edit");
    edit.title = "inpaint, outpaint or restyle this picture";
    edit.addEventListener("click", () => this.actions.edit(src));
    const vary = element("button", "vary", "vary");
    vary.title = "variations of this picture";
    vary.addEventListener("click", () => this.actions.vary(src));
    const caption = element("figcaption");
    caption.append(seedButton, download, edit, vary);
    slot.replaceChildren(img, caption);
  }
}

function element(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}
