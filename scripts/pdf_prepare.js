// Prepares the singlehtml page of the book for printing; run by scripts/build_pdf.py after MathJax
// has typeset the page, with the page laid out at the width of the printed text column.
// Returns what the build checks: MathJax errors, targets of the table of contents, elements still
// wider than the column, and how many figures the book has.
(opts) => {
  const article = document.querySelector("article.bd-article");
  const style = document.createElement("style");
  style.textContent = opts.css;
  document.head.appendChild(style);

  // What the site collapses is printed open; what only makes sense on the site goes.
  document.querySelectorAll(".toggle-hidden").forEach((e) => e.classList.remove("toggle-hidden"));
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  document.querySelectorAll("a.pdf-download").forEach((a) => (a.closest("p") || a).remove());

  const mathErrors = Array.from(document.querySelectorAll("mjx-merror"))
    .map((e) => e.getAttribute("data-mjx-error") || e.textContent);
  // MathJax's hidden MathML copy of every formula serves screen readers of the site; the PDF is
  // not tagged, and the copies add a fifth of the page's elements to lay out.
  document.querySelectorAll("mjx-assistive-mml").forEach((e) => e.remove());

  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  // A heading's content for the contents (its mathematics is MathJax's output, which keeps its
  // glyphs in CSS, so it is cloned rather than read as text).
  const headingLabel = (h) => {
    const label = el("span", "pdf-label");
    h.childNodes.forEach((n) => label.appendChild(n.cloneNode(true)));
    label.querySelectorAll(".headerlink, [id]").forEach((x) => {
      if (x.classList.contains("headerlink")) x.remove(); else x.removeAttribute("id");
    });
    return label;
  };
  const sectionOf = (doc, isRoot) => {
    if (isRoot) return article.querySelector(":scope > section");
    const span = document.getElementById("document-" + doc);
    let s = span ? span.nextElementSibling : null;
    while (s && s.tagName !== "SECTION") s = s.nextElementSibling;
    return s;
  };

  // Title page.
  const titlepage = el("div", "pdf-titlepage");
  titlepage.appendChild(el("h1", "", opts.title.replace(/\s*\(edition without solutions\)\s*$/, "")));
  if (opts.edition) titlepage.appendChild(el("div", "pdf-edition", opts.edition));
  if (opts.author) titlepage.appendChild(el("div", "pdf-author", opts.author));
  if (opts.repository) {
    const p = el("p", "pdf-small", "Source, notebooks and the online edition: ");
    const a = el("a", "", opts.repository);
    a.href = opts.repository;
    p.appendChild(a);
    titlepage.appendChild(p);
  }
  if (opts.stamp) titlepage.appendChild(el("p", "pdf-small", "Built " + opts.stamp + "."));
  titlepage.appendChild(el("p", "pdf-small",
    "Text licensed CC-BY-4.0; code (the companion package and every code cell) MIT."));

  // Table of contents: parts, documents, and the sections of numbered chapters.
  const contents = el("nav", "pdf-contents");
  contents.appendChild(el("h2", "", "Contents"));
  const list = el("ul");
  contents.appendChild(list);
  const targets = [];
  const entry = (cls, label, id) => {
    const li = el("li", cls);
    const a = el("a");
    a.href = "#" + id;
    a.appendChild(label);
    a.appendChild(el("span", "pdf-leader"));
    const page = el("span", "pdf-page");
    page.dataset.target = id;
    a.appendChild(page);
    li.appendChild(a);
    list.appendChild(li);
    targets.push(id);
  };
  // Section ids repeat across chapters in one page ("learning-goals"): each entry of the contents
  // gets an anchor of its own.
  let anchors = 0;
  const anchor = (section) => {
    const a = el("span", "pdf-anchor");
    a.id = `pdf-toc-${++anchors}`;
    section.insertBefore(a, section.firstChild);
    return a.id;
  };
  const missing = [];
  opts.parts.forEach((part, i) => {
    if (part.caption) list.appendChild(el("li", "pdf-part", part.caption));
    part.docs.forEach((doc, j) => {
      const section = sectionOf(doc, i === 0 && j === 0);
      const heading = section && section.querySelector(":scope > h1, :scope > h2");
      if (!heading) { missing.push(doc); return; }
      if (part.caption && j === 0) {
        section.insertBefore(el("div", "pdf-part-title", part.caption), heading);
      }
      entry("pdf-doc", headingLabel(heading), anchor(section));
      if (part.numbered) {
        section.querySelectorAll(":scope > section > h3").forEach((h) => {
          entry("pdf-section", headingLabel(h), anchor(h.parentElement));
        });
      }
    });
  });
  article.insertBefore(contents, article.firstChild);
  article.insertBefore(titlepage, contents);

  window.coursePdfSetPages = (pages) => {
    contents.querySelectorAll(".pdf-page").forEach((p) => {
      p.textContent = pages[p.dataset.target] ?? "";
    });
    // Lay the whole page out afresh, as for the first print: Chromium otherwise reuses parts of
    // the previous layout and may break a few pages differently.
    document.documentElement.style.display = "none";
    void document.documentElement.offsetHeight;
    document.documentElement.style.display = "";
    void document.documentElement.offsetHeight;
  };

  // Fit to the column: display equations (with their numbers) and tables wider than the text
  // are scaled down, at most to opts.minScale; whatever is still too wide is reported.
  const column = article.getBoundingClientRect();
  const scaled = [];
  const describe = (e) => {
    const doc = e.closest(".toctree-wrapper > section");
    const where = doc ? doc.id : "preface";
    return `${where}: <${e.tagName.toLowerCase()} class="${e.className}"> ` +
      e.textContent.replace(/\s+/g, " ").trim().slice(0, 80);
  };
  const shrink = (box, measure, available) => {
    const needed = measure();
    if (needed <= available + 1) return;
    let scale = Math.max(opts.minScale, (available - 2) / needed);
    box.style.fontSize = `${Math.floor(scale * 1000) / 10}%`;
    for (let k = 0; k < 6 && measure() > available + 1 && scale > opts.minScale; k++) {
      scale = Math.max(opts.minScale, scale * 0.95);
      box.style.fontSize = `${Math.floor(scale * 1000) / 10}%`;
    }
    scaled.push(`${describe(box)} (${Math.round(scale * 100)}%)`);
  };
  document.querySelectorAll("div.math").forEach((box) => {
    const math = box.querySelector("mjx-container > mjx-math");
    if (!math) return;
    const eqno = box.querySelector(".eqno");
    const gap = eqno ? eqno.getBoundingClientRect().width + 12 : 0;
    shrink(box, () => math.getBoundingClientRect().width + gap, box.clientWidth);
  });
  // Inline mathematics cannot break across lines: one longer than its line is scaled down too.
  const contentWidth = (block) => {
    const cs = getComputedStyle(block);
    const px = (v) => parseFloat(v) || 0;
    return block.getBoundingClientRect().width - px(cs.paddingLeft) - px(cs.paddingRight) -
      px(cs.borderLeftWidth) - px(cs.borderRightWidth);
  };
  document.querySelectorAll('mjx-container:not([display="true"])').forEach((m) => {
    const block = m.parentElement.closest("p, li, dd, dt, td, th, figcaption, div, section");
    const available = Math.min(contentWidth(block), column.width);
    if (m.getBoundingClientRect().width > available) {
      shrink(m, () => m.getBoundingClientRect().width, available);
    }
  });
  article.querySelectorAll("table").forEach((table) => {
    const parent = table.parentElement;
    shrink(table, () => table.getBoundingClientRect().width,
      Math.min(parent.clientWidth, column.width));
  });

  const overflow = [];
  article.querySelectorAll("*").forEach((e) => {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return;
    if (r.right > column.right + 2 || r.left < column.left - 2) {
      // report the outermost element only
      const p = e.parentElement && e.parentElement.getBoundingClientRect();
      if (p && (p.right > column.right + 2 || p.left < column.left - 2)) return;
      overflow.push(describe(e) + ` [${Math.round(r.left)}, ${Math.round(r.right)}] of [${Math.round(column.left)}, ${Math.round(column.right)}]`);
    }
  });

  return {
    mathErrors,
    missing,
    targets,
    scaled,
    overflow,
    figures: article.querySelectorAll("figure img, .figure img").length,
  };
}
