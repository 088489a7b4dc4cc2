// digitrec page: draw or upload, send to /api/v1/predict, show the answer, take corrections.
// Every piece of data from the server or the user goes into the DOM through textContent or attributes,
// never innerHTML, so nothing in a response can become markup.
"use strict";

(() => {
  // The model gets black ink on white paper whatever the screen shows (dark mode draws light on dark).
  const MODEL_INK = "#111111";
  const MODEL_PAPER = "#ffffff";
  // Pen width follows the size of the writing: a tenth of the tallest stroke, like MNIST's strokes. The old
  // fixed 24 px pen merged "2026" written 70 px tall into one blob (benchmarks/pen_merge.py measures it).
  const PEN = { ratio: 0.1, min: 4, max: 24 };
  const TINY_INK = 40; // canvas pixels: writing shorter than this gets "write bigger"
  const MAX_UPLOAD_PIXELS = 4_000_000; // bigger photos are shrunk here, well under the server's 40 MP limit
  const SHRINK_ABOVE_BYTES = 2_000_000; // files this big are checked (decoded) before sending
  const PREDICT_DELAY_MS = 250;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const context = pad.getContext("2d");
  const preview = $("preview");
  const boxes = $("boxes");
  const stage = $("stage");
  const fileInput = $("file");
  const result = $("result");
  const darkScheme = window.matchMedia("(prefers-color-scheme: dark)");

  let strokes = []; // each stroke: [{x, y}, ...] in canvas pixels
  let current = null; // the stroke being drawn
  let drawingPointer = null; // only this pointer draws; a second finger cancels the stroke
  const pointersDown = new Set();
  let upload = null; // the uploaded File, when the input is an upload rather than a drawing
  let previewUrl = null;
  let predictTimer = null;
  let requestNumber = 0; // answers to older requests are dropped
  let lastAnswer = null;
  let lastSent = null; // {blob, name, mode}: what the answer was read from, for a correction
  let selectedDigit = 0;
  let feedbackMode = "off"; // from GET /api/v1/model: "open", "token" or "off"
  let savedCorrection = null;

  // --- Drawing --------------------------------------------------------------------------------------------

  // The size of the writing: its tallest stroke (most digits are one stroke from top to bottom).
  function writingHeight() {
    let tallest = 0;
    for (const stroke of strokes) {
      const ys = stroke.map((point) => point.y);
      tallest = Math.max(tallest, Math.max(...ys) - Math.min(...ys));
    }
    return tallest;
  }

  function penWidth() {
    return Math.min(PEN.max, Math.max(PEN.min, PEN.ratio * writingHeight()));
  }

  function paint(target, ink, paper) {
    const canvas = target.canvas;
    if (paper) {
      target.fillStyle = paper;
      target.fillRect(0, 0, canvas.width, canvas.height);
    } else {
      target.clearRect(0, 0, canvas.width, canvas.height); // see-through over an uploaded image
    }
    const width = penWidth();
    target.strokeStyle = ink;
    target.fillStyle = ink;
    target.lineWidth = width;
    target.lineCap = "round";
    target.lineJoin = "round";
    for (const points of strokes) {
      target.beginPath();
      if (points.length === 1) {
        target.arc(points[0].x, points[0].y, width / 2, 0, 2 * Math.PI);
        target.fill();
        continue;
      }
      target.moveTo(points[0].x, points[0].y);
      for (const point of points.slice(1)) target.lineTo(point.x, point.y);
      target.stroke();
    }
  }

  function redraw() {
    const style = getComputedStyle(document.documentElement);
    const dark = darkScheme.matches;
    if (upload) paint(context, MODEL_INK, null);
    else paint(context, dark ? style.getPropertyValue("--ink").trim() : MODEL_INK,
      dark ? style.getPropertyValue("--paper").trim() : MODEL_PAPER);
  }
  darkScheme.addEventListener("change", redraw);

  function canvasPoint(event) {
    const rect = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) / rect.width) * pad.width,
      y: ((event.clientY - rect.top) / rect.height) * pad.height,
    };
  }

  function cancelStroke() {
    if (current) strokes.splice(strokes.indexOf(current), 1);
    current = null;
    drawingPointer = null;
    redraw();
    if (!strokes.length && !upload) $("stage-hint").hidden = false;
  }

  pad.addEventListener("pointerdown", (event) => {
    pointersDown.add(event.pointerId);
    if (event.button !== 0 && event.pointerType === "mouse") return;
    event.preventDefault();
    if (drawingPointer !== null || pointersDown.size > 1) {
      cancelStroke(); // a second finger: a pinch or a palm, not writing
      return;
    }
    if (upload) showDrawing();
    pad.setPointerCapture(event.pointerId);
    drawingPointer = event.pointerId;
    current = [canvasPoint(event)];
    strokes.push(current);
    clearTimeout(predictTimer);
    $("stage-hint").hidden = true;
    redraw();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!current || event.pointerId !== drawingPointer) return;
    event.preventDefault();
    // Coalesced events give pens and fast mice their full resolution.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const each of events.length ? events : [event]) current.push(canvasPoint(each));
    redraw();
  });

  for (const type of ["pointerup", "pointercancel"]) {
    document.addEventListener(type, (event) => pointersDown.delete(event.pointerId));
  }
  function pointerGone(event) {
    if (event.pointerId !== drawingPointer) return;
    if (event.type === "pointercancel") return cancelStroke(); // the browser took the touch (zoom, scroll)
    current = null;
    drawingPointer = null;
    schedulePredict();
  }
  pad.addEventListener("pointerup", pointerGone);
  pad.addEventListener("pointercancel", pointerGone);

  function undo() {
    if (upload) return clearAll();
    strokes.pop();
    redraw();
    if (strokes.length) schedulePredict();
    else clearAll();
  }

  function clearAll() {
    strokes = [];
    current = null;
    drawingPointer = null;
    showDrawing();
    clearTimeout(predictTimer);
    requestNumber += 1;
    $("stage-hint").hidden = false;
    showEmpty();
  }

  function showDrawing() {
    upload = null;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = null;
    preview.hidden = true;
    preview.removeAttribute("src");
    $("preview-missing").hidden = true;
    $("draw").hidden = true;
    stage.classList.remove("has-upload");
    clearBoxes();
    redraw();
  }

  // --- Uploads: file picker, drag and drop, paste ---------------------------------------------------------

  function useFile(file) {
    if (!file) return;
    strokes = [];
    upload = file;
    redraw(); // the canvas stays on top, see-through: drawing on it starts a new drawing
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    stage.classList.add("has-upload");
    $("stage-hint").hidden = true;
    $("preview-missing").hidden = true;
    $("draw").hidden = false;
    preview.hidden = false;
    preview.src = previewUrl;
    clearBoxes();
    predict();
  }

  preview.addEventListener("error", () => {
    if (!upload) return;
    preview.hidden = true;
    $("preview-missing").hidden = false;
  });

  // A phone photo (48-200 MP) is over the server's limits: shrink it here to at most 4 MP, turned upright
  // from its EXIF orientation (the shrunk JPEG carries no EXIF). Anything the browser cannot decode
  // (SVG, HEIC in most browsers) goes as it is, and the server says what it thinks of it.
  async function shrunk(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    } catch (error) {
      return null;
    }
    const pixels = bitmap.width * bitmap.height;
    if (pixels <= MAX_UPLOAD_PIXELS && file.size <= SHRINK_ABOVE_BYTES * 4) {
      bitmap.close();
      return null;
    }
    const scale = Math.min(1, Math.sqrt(MAX_UPLOAD_PIXELS / pixels));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const target = canvas.getContext("2d");
    target.imageSmoothingQuality = "high";
    target.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  }

  // Width x height from a PNG or JPEG header, without decoding (0 when unknown): a 48 MP photo of a page
  // can be a small file, and the server would refuse it (413) only after the whole upload.
  async function headerPixels(file) {
    const bytes = new Uint8Array(await file.slice(0, 262144).arrayBuffer());
    const view = new DataView(bytes.buffer);
    if (bytes.length > 24 && bytes[0] === 0x89 && bytes[1] === 0x50) return view.getUint32(16) * view.getUint32(20);
    if (bytes[0] !== 0xff || bytes[1] !== 0xd8) return 0;
    for (let at = 2; at + 9 < bytes.length && bytes[at] === 0xff;) {
      const marker = bytes[at + 1];
      // SOF0-SOF15 carry the frame size; C4 (Huffman), C8 (reserved) and CC (arithmetic) are not frames.
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return view.getUint16(at + 5) * view.getUint16(at + 7);
      }
      at += 2 + view.getUint16(at + 2);
    }
    return 0;
  }

  $("upload").addEventListener("click", () => fileInput.click());
  $("draw").addEventListener("click", clearAll);
  fileInput.addEventListener("change", () => {
    useFile(fileInput.files[0]);
    fileInput.value = ""; // choosing the same file again still fires "change"
  });

  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    dragDepth += 1;
    $("drop-overlay").hidden = false;
    stage.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) endDrag();
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    endDrag();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) useFile(file);
  });
  function endDrag() {
    dragDepth = 0;
    $("drop-overlay").hidden = true;
    stage.classList.remove("dragging");
  }

  document.addEventListener("paste", (event) => {
    const items = event.clipboardData ? Array.from(event.clipboardData.items) : [];
    const item = items.find((each) => each.kind === "file" && each.type.startsWith("image/"));
    if (!item) return;
    event.preventDefault();
    useFile(item.getAsFile());
  });

  // --- Keyboard -------------------------------------------------------------------------------------------

  const mac = /mac|iphone|ipad/i.test(navigator.userAgentData ? navigator.userAgentData.platform : navigator.platform);
  if (mac) for (const key of document.querySelectorAll("kbd.mod")) key.textContent = "⌘";

  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input:not([type=radio]):not([type=checkbox]), textarea")) return;
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") {
      event.preventDefault();
      undo();
    } else if (event.key === "Escape") {
      clearAll();
    }
  });
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clearAll);
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      if (upload || strokes.length) predict();
    });
  }
  $("use-number").addEventListener("click", () => {
    document.querySelector("input[name=mode][value=number]").checked = true;
    predict();
  });

  // --- Asking the server ----------------------------------------------------------------------------------

  function schedulePredict() {
    clearTimeout(predictTimer);
    predictTimer = setTimeout(predict, PREDICT_DELAY_MS);
  }

  function currentMode() {
    return document.querySelector("input[name=mode]:checked").value;
  }

  function drawingBlob() {
    // The model's copy: black on white, whatever the screen shows.
    const canvas = document.createElement("canvas");
    canvas.width = pad.width;
    canvas.height = pad.height;
    paint(canvas.getContext("2d"), MODEL_INK, MODEL_PAPER);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  async function send(blob, name, mode) {
    const form = new FormData();
    form.append("file", blob, name);
    const params = new URLSearchParams({ mode, images: "true" });
    const request = () => fetch(`/api/v1/predict?${params}`, { method: "POST", body: form });
    // Once more on a network error: the server may close an idle keep-alive connection as the request leaves.
    const response = await request().catch(request);
    const body = await response.json().catch(() => ({}));
    return { response, body };
  }

  async function predict() {
    const number = (requestNumber += 1);
    const file = upload;
    const mode = currentMode();
    let blob = file || (await drawingBlob());
    if (!blob || number !== requestNumber) return;
    result.dataset.busy = "true";
    let answer;
    let failure = null;
    try {
      if (file && (file.size > SHRINK_ABOVE_BYTES || (await headerPixels(file)) > MAX_UPLOAD_PIXELS)) {
        blob = (await shrunk(file)) || file;
      }
      let { response, body } = await send(blob, file ? file.name : "drawing.png", mode);
      if (response.status === 413 && blob === file) {
        const smaller = await shrunk(file); // few bytes, many pixels: only the server could tell
        if (smaller) ({ response, body } = await send((blob = smaller), file.name, mode));
      }
      if (response.ok) answer = body;
      else failure = typeof body.detail === "string" ? body.detail : `the server answered ${response.status}`;
    } catch (error) {
      failure = "the server could not be reached";
    }
    if (number !== requestNumber) return;
    delete result.dataset.busy;
    lastSent = { blob, name: file ? file.name : "drawing.png", mode };
    if (failure) showError(failure);
    else showAnswer(answer, mode);
  }

  // --- Showing the answer ---------------------------------------------------------------------------------

  function percent(probability) {
    if (probability >= 0.9995) return ">99.9%"; // never claim certainty
    if (probability > 0 && probability < 0.0005) return "<0.1%";
    return `${(probability * 100).toFixed(probability === 0 ? 0 : 1)}%`;
  }

  function buildBars() {
    const list = $("bars");
    for (let digit = 0; digit < 10; digit += 1) {
      const row = document.createElement("li");
      row.className = "bar-row";
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = String(digit);
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      row.append(label, track, value);
      list.append(row);
    }
  }

  function setBars(probabilities) {
    const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
    Array.from($("bars").children).forEach((row, digit) => {
      const probability = probabilities ? probabilities[digit] : 0;
      const text = probabilities ? percent(probability) : "–"; // nothing read yet: no number to show
      row.querySelector(".bar-fill").style.width = `${(probability * 100).toFixed(2)}%`;
      row.querySelector(".bar-value").textContent = text;
      row.classList.toggle("best", digit === best);
      row.setAttribute("aria-label", `${digit}: ${probabilities ? text : "not read"}`);
    });
  }

  function setVerdict(state, answerText, verdict, advice) {
    result.dataset.state = state;
    $("answer").replaceChildren(answerText);
    $("verdict").textContent = verdict;
    $("advice").textContent = advice || "";
    $("advice").hidden = !advice;
    $("use-number").hidden = true;
  }

  function showEmpty() {
    lastAnswer = null;
    setVerdict("empty", "–", "Draw a digit, or upload, drop or paste an image.");
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "The 28×28 images the network was given appear here.";
    $("seen").replaceChildren(note);
    $("bars-for").textContent = "";
    $("timing").textContent = "";
    setBars(null);
    clearBoxes();
    hideCorrection();
  }

  function showError(message) {
    lastAnswer = null;
    setVerdict("error", "!", `Could not read this: ${message}`);
    $("seen").replaceChildren();
    $("bars-for").textContent = "";
    $("timing").textContent = "";
    setBars(null);
    clearBoxes();
    hideCorrection();
  }

  // Neighbours in one row that touch or overlap, or one box far wider than tall: digits ran together.
  function crowded(answer) {
    const rows = answer.lines && answer.lines.length ? answer.lines.map((line) => line.digits)
      : [answer.digits.map((_, index) => index)];
    return rows.some((row) => row.some((index, at) => {
      const [x, , w, h] = answer.digits[index].box;
      if (w > 1.25 * h) return true;
      if (at === 0) return false;
      const [px, , pw, ph] = answer.digits[row[at - 1]].box;
      return x - (px + pw) < 0.06 * Math.max(h, ph);
    }));
  }

  // What to do about an answer that is unsure or empty: advice that fits the failure.
  function adviceFor(answer) {
    if (!upload && strokes.length && writingHeight() < TINY_INK) return "Write bigger: use most of the box.";
    if (answer.reason === "several_lines") return "To read one number, write it on one line.";
    if (answer.digits.length > 1 && crowded(answer)) return "Leave a gap between digits.";
    if (answer.reason === "no_ink" || !answer.digits.length) {
      return upload ? "Try a sharper picture with darker ink." : "Write bigger and darker.";
    }
    return "If it is wrong, write it again the way digits are printed.";
  }

  function answerRows(answer) {
    const lines = answer.lines || [];
    if (lines.length < 2) {
      if (answer.digit !== null && answer.digit !== undefined) return String(answer.digit);
      return answer.number || answer.digits.map((digit) => digit.digit).join("");
    }
    const fragment = document.createDocumentFragment();
    for (const line of lines) {
      const row = document.createElement("span");
      row.className = "row";
      row.textContent = line.text;
      fragment.append(row);
    }
    return fragment;
  }

  function showAnswer(answer, requestedMode) {
    lastAnswer = answer;
    const digits = answer.digits || [];
    const mode = requestedMode === "auto" ? `auto → ${answer.mode}` : answer.mode;
    $("timing").textContent = `Read in ${answer.timing_ms.toFixed(1)} ms on the server (mode: ${mode}).`;
    showCorrection(answer);
    if (!digits.length) {
      if (answer.reason === "not_a_digit") {
        setVerdict("none", "✗", "That doesn't look like a digit.", "Write one digit, or a number, large and clear.");
        $("use-number").hidden = requestedMode !== "digit"; // several digits read as one look like nothing
      } else if (!upload && strokes.length) {
        // Drawn ink the server found too small or faint to be a digit (a tap, a dot, a scratch).
        setVerdict("none", "✗", "That doesn't look like a digit.", adviceFor(answer));
      } else {
        setVerdict("none", "?", "No digit found.", adviceFor(answer));
      }
      $("seen").replaceChildren();
      $("bars-for").textContent = "";
      setBars(null);
      clearBoxes();
      return;
    }
    const rows = answerRows(answer);
    const text = typeof rows === "string" ? rows : answer.lines.map((line) => line.text).join(" / ");
    const sure = percent(answer.confidence);
    if (answer.reason === "several_digits") {
      setVerdict("unsure", rows, `It looks like several digits, not one: best guess ${text}.`);
      $("use-number").hidden = false;
    } else if (answer.reason === "several_lines") {
      setVerdict(answer.low_confidence ? "unsure" : "sure", rows, `Read as ${answer.lines.length} rows.`,
        adviceFor(answer));
    } else if (answer.low_confidence) {
      setVerdict("unsure", rows, `Not sure: best guess ${text}, ${sure} confident.`, adviceFor(answer));
    } else {
      setVerdict("sure", rows, `${sure} confident.`);
    }
    if (answer.truncated) $("verdict").textContent += ` Only the first ${digits.length} digits were read.`;
    showSeen(digits);
    selectDigit(Math.min(selectedDigit, digits.length - 1));
  }

  function showSeen(digits) {
    const figures = digits.map((digit, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "seen-digit";
      button.setAttribute("aria-label", `Digit ${index + 1}: read as ${digit.digit}, ${percent(digit.confidence)}`);
      if (typeof digit.image === "string" && digit.image.startsWith("data:image/png;base64,")) {
        const image = document.createElement("img");
        image.src = digit.image;
        image.alt = "";
        image.width = 56;
        image.height = 56;
        button.append(image);
      }
      const caption = document.createElement("span");
      caption.textContent = `${digit.digit} · ${percent(digit.confidence)}`;
      if (digit.low_confidence) caption.className = "unsure-text";
      button.append(caption);
      button.addEventListener("click", () => selectDigit(index));
      return button;
    });
    $("seen").replaceChildren(...figures);
  }

  function selectDigit(index) {
    if (!lastAnswer) return;
    selectedDigit = index;
    const digits = lastAnswer.digits;
    Array.from($("seen").children).forEach((button, each) => {
      button.setAttribute("aria-pressed", String(each === index));
    });
    $("bars-for").textContent = digits.length > 1
      ? `For digit ${index + 1} of ${digits.length} (choose another above).`
      : "";
    setBars(digits[index].probabilities);
    drawBoxes(lastAnswer);
  }

  function clearBoxes() {
    boxes.replaceChildren();
  }

  function drawBoxes(answer) {
    clearBoxes();
    boxes.setAttribute("viewBox", `0 0 ${answer.width} ${answer.height}`);
    boxes.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const scale = Math.max(answer.width, answer.height) / 300; // keep lines ~2 screen pixels thick
    const size = 14 * scale;
    answer.digits.forEach((digit, index) => {
      const [x, y, w, h] = digit.box;
      const rect = document.createElementNS(SVG_NS, "rect");
      rect.setAttribute("x", x);
      rect.setAttribute("y", y);
      rect.setAttribute("width", w);
      rect.setAttribute("height", h);
      rect.setAttribute("stroke-width", String(2 * scale));
      let kind = digit.low_confidence ? "box unsure" : "box";
      if (index === selectedDigit && answer.digits.length > 1) kind += " selected";
      rect.setAttribute("class", kind);
      const label = document.createElementNS(SVG_NS, "text");
      // Above the box when there is room, else beside it on the right, else below it: never on the ink.
      let [labelX, labelY] = [x, y - 4 * scale];
      if (labelY < size) {
        if (x + w + 3 * scale + size <= answer.width) [labelX, labelY] = [x + w + 3 * scale, y + size];
        else labelY = y + h + size;
      }
      label.setAttribute("x", labelX);
      label.setAttribute("y", labelY);
      label.setAttribute("font-size", String(size));
      label.setAttribute("class", digit.low_confidence ? "box-label unsure" : "box-label");
      label.textContent = String(digit.digit);
      boxes.append(rect, label);
    });
  }

  // --- Corrections (POST /api/v1/feedback) ----------------------------------------------------------------

  function hideCorrection() {
    $("correct").classList.add("idle"); // keeps its space: an answer does not move the page
    $("correct-form").hidden = true;
  }

  function showCorrection(answer) {
    savedCorrection = null;
    $("correct-status").textContent = "";
    $("correct-undo").hidden = true;
    $("correct-form").hidden = true;
    $("wrong").hidden = false;
    $("correct").classList.remove("idle");
    const inputs = (answer.digits.length ? answer.digits : [null]).map((digit, index) => {
      const input = document.createElement("input");
      input.type = "text";
      input.inputMode = "numeric";
      input.className = "correct-digit";
      input.value = digit ? String(digit.digit) : "";
      input.maxLength = digit ? 1 : 12; // one digit per box; a free number when no box was found
      input.pattern = digit ? "[0-9]" : "[0-9]+";
      input.required = true;
      input.setAttribute("aria-label", digit ? `Digit ${index + 1}` : "The digits, left to right");
      return input;
    });
    $("correct-digits").replaceChildren(...inputs);
    $("correct-title").textContent = answer.digits.length > 1 ? "The right digit in each box:"
      : "The right reading:";
  }

  $("wrong").addEventListener("click", () => {
    $("correct-form").hidden = false;
    $("wrong").hidden = true;
    $("token-row").hidden = feedbackMode !== "token";
    $("correct-digits").querySelector("input").focus();
  });
  $("correct-cancel").addEventListener("click", () => {
    $("correct-form").hidden = true;
    $("wrong").hidden = false;
  });
  $("correct-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const label = Array.from($("correct-digits").querySelectorAll("input"), (input) => input.value.trim()).join("");
    saveCorrection(label);
  });
  $("not-digit").addEventListener("click", () => saveCorrection("none"));

  function authHeaders() {
    const token = $("token").value.trim();
    return feedbackMode === "token" && token ? { authorization: `Bearer ${token}` } : {};
  }

  async function saveCorrection(label) {
    if (!lastSent) return;
    if (label !== "none" && !/^[0-9]+$/.test(label)) {
      $("correct-status").textContent = "Type a digit in each box (0-9), or choose “Not a digit”.";
      return;
    }
    const form = new FormData();
    form.append("file", lastSent.blob, lastSent.name);
    form.append("label", label);
    form.append("mode", lastSent.mode);
    $("correct-status").textContent = "Saving…";
    try {
      const response = await fetch("/api/v1/feedback", { method: "POST", body: form, headers: authHeaders() });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        const detail = typeof body.detail === "string" ? body.detail : `the server answered ${response.status}`;
        $("correct-status").textContent = `Not saved: ${detail}`;
        return;
      }
      savedCorrection = body.id;
      $("correct-form").hidden = true;
      $("correct-status").textContent = label === "none"
        ? `Saved (#${body.id}): not a digit. Thank you.` : `Saved (#${body.id}): ${label}. Thank you.`;
      $("correct-undo").hidden = false;
    } catch (error) {
      $("correct-status").textContent = "Not saved: the server could not be reached.";
    }
  }

  $("correct-undo").addEventListener("click", async () => {
    if (savedCorrection === null) return;
    try {
      const response = await fetch(`/api/v1/feedback/${encodeURIComponent(savedCorrection)}`,
        { method: "DELETE", headers: authHeaders() });
      if (!response.ok && response.status !== 404) {
        $("correct-status").textContent = `Not undone: the server answered ${response.status}.`;
        return;
      }
    } catch (error) {
      $("correct-status").textContent = "Not undone: the server could not be reached.";
      return;
    }
    savedCorrection = null;
    $("correct-undo").hidden = true;
    $("correct-status").textContent = "Correction removed.";
    $("wrong").hidden = false;
  });

  async function loadModelInfo() {
    try {
      const info = await (await fetch("/api/v1/model")).json();
      feedbackMode = ["open", "token"].includes(info.feedback) ? info.feedback : "off";
      if (info.model_version) $("model-version").textContent = ` · model ${info.model_version}`;
    } catch (error) {
      feedbackMode = "off";
    }
    $("correct").hidden = feedbackMode === "off";
  }

  buildBars();
  redraw();
  showEmpty();
  loadModelInfo();
})();
