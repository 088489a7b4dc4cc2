// digitrec page: draw or upload, send to /api/v1/predict, show the answer.
// Every piece of data from the server or the user goes into the DOM through textContent or attributes,
// never innerHTML, so nothing in a response can become markup.
"use strict";

(() => {
  const INK = "#111111";
  const PAPER = "#ffffff";
  const STROKE_WIDTH = 24; // canvas pixels: a digit drawn ~250px high reaches the model ~2px thick, like MNIST
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

  let strokes = []; // each stroke: [{x, y}, ...] in canvas pixels
  let current = null; // the stroke being drawn
  let upload = null; // the uploaded File, when the input is an upload rather than a drawing
  let previewUrl = null;
  let predictTimer = null;
  let requestNumber = 0; // answers to older requests are dropped
  let lastAnswer = null;
  let selectedDigit = 0;

  // --- Drawing --------------------------------------------------------------------------------------------

  function paintPaper() {
    context.fillStyle = PAPER;
    context.fillRect(0, 0, pad.width, pad.height);
  }

  function drawStroke(points) {
    context.strokeStyle = INK;
    context.fillStyle = INK;
    context.lineWidth = STROKE_WIDTH;
    context.lineCap = "round";
    context.lineJoin = "round";
    if (points.length === 1) {
      context.beginPath();
      context.arc(points[0].x, points[0].y, STROKE_WIDTH / 2, 0, 2 * Math.PI);
      context.fill();
      return;
    }
    context.beginPath();
    context.moveTo(points[0].x, points[0].y);
    for (const point of points.slice(1)) context.lineTo(point.x, point.y);
    context.stroke();
  }

  function redraw() {
    paintPaper();
    for (const stroke of strokes) drawStroke(stroke);
  }

  function canvasPoint(event) {
    const rect = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) / rect.width) * pad.width,
      y: ((event.clientY - rect.top) / rect.height) * pad.height,
    };
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    event.preventDefault();
    if (upload) showDrawing();
    pad.setPointerCapture(event.pointerId);
    current = [canvasPoint(event)];
    strokes.push(current);
    clearTimeout(predictTimer);
    $("stage-hint").hidden = true;
    redraw();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!current) return;
    event.preventDefault();
    // Coalesced events give pens and fast mice their full resolution.
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const each of events.length ? events : [event]) current.push(canvasPoint(each));
    redraw();
  });

  function endStroke() {
    if (!current) return;
    current = null;
    schedulePredict();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

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
    showDrawing();
    redraw();
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
    pad.hidden = false;
    clearBoxes();
  }

  // --- Uploads: file picker, drag and drop, paste ---------------------------------------------------------

  function useFile(file) {
    if (!file) return;
    strokes = [];
    redraw();
    upload = file;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    pad.hidden = true;
    $("stage-hint").hidden = true;
    $("preview-missing").hidden = true;
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

  $("upload").addEventListener("click", () => fileInput.click());
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

  document.addEventListener("keydown", (event) => {
    const typing = event.target instanceof HTMLInputElement && event.target.type === "text";
    if (typing) return;
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

  // --- Asking the server ----------------------------------------------------------------------------------

  function schedulePredict() {
    clearTimeout(predictTimer);
    predictTimer = setTimeout(predict, PREDICT_DELAY_MS);
  }

  function currentMode() {
    return document.querySelector("input[name=mode]:checked").value;
  }

  function inputBlob() {
    if (upload) return Promise.resolve(upload);
    return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  }

  async function predict() {
    const number = (requestNumber += 1);
    const blob = await inputBlob();
    if (!blob || number !== requestNumber) return;
    result.dataset.busy = "true";
    const form = new FormData();
    form.append("file", blob, upload ? upload.name : "drawing.png");
    const params = new URLSearchParams({ mode: currentMode(), images: "true" });
    let answer;
    let failure = null;
    try {
      const response = await fetch(`/api/v1/predict?${params}`, { method: "POST", body: form });
      const body = await response.json().catch(() => ({}));
      if (response.ok) answer = body;
      else failure = typeof body.detail === "string" ? body.detail : `the server answered ${response.status}`;
    } catch (error) {
      failure = "the server could not be reached";
    }
    if (number !== requestNumber) return;
    delete result.dataset.busy;
    if (failure) showError(failure);
    else showAnswer(answer);
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
      value.textContent = "0%";
      row.append(label, track, value);
      list.append(row);
    }
  }

  function setBars(probabilities) {
    const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
    Array.from($("bars").children).forEach((row, digit) => {
      const probability = probabilities ? probabilities[digit] : 0;
      row.querySelector(".bar-fill").style.width = `${(probability * 100).toFixed(2)}%`;
      row.querySelector(".bar-value").textContent = percent(probability);
      row.classList.toggle("best", digit === best);
      row.setAttribute("aria-label", `${digit}: ${percent(probability)}`);
    });
  }

  function showEmpty() {
    lastAnswer = null;
    result.dataset.state = "empty";
    $("answer").textContent = "–";
    $("verdict").textContent = "Draw a digit, or upload, drop or paste an image.";
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "The 28×28 images the network was given appear here.";
    $("seen").replaceChildren(note);
    $("bars-for").textContent = "";
    $("timing").textContent = "";
    setBars(null);
    clearBoxes();
  }

  function showError(message) {
    lastAnswer = null;
    result.dataset.state = "error";
    $("answer").textContent = "!";
    $("verdict").textContent = `Could not read this: ${message}`;
    $("seen").replaceChildren();
    $("bars-for").textContent = "";
    $("timing").textContent = "";
    setBars(null);
    clearBoxes();
  }

  function showAnswer(answer) {
    lastAnswer = answer;
    const digits = answer.digits || [];
    $("timing").textContent = `Read in ${answer.timing_ms.toFixed(1)} ms on the server (mode: ${answer.mode}).`;
    if (!digits.length) {
      result.dataset.state = "none";
      $("answer").textContent = "?";
      $("verdict").textContent = "No digit found. Draw bigger or darker, or try a clearer picture.";
      $("seen").replaceChildren();
      $("bars-for").textContent = "";
      setBars(null);
      clearBoxes();
      return;
    }
    const text = answer.digit !== null ? String(answer.digit) : answer.number;
    const sure = percent(answer.confidence);
    result.dataset.state = answer.low_confidence ? "unsure" : "sure";
    $("answer").textContent = text;
    $("verdict").textContent = answer.low_confidence
      ? `Not sure: best guess ${text}, ${sure} confident. Try writing it more clearly.`
      : `${sure} confident.`;
    showSeen(digits);
    selectDigit(Math.min(selectedDigit, digits.length - 1));
    drawBoxes(answer);
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
      label.setAttribute("x", x);
      label.setAttribute("y", Math.max(y - 4 * scale, 14 * scale));
      label.setAttribute("font-size", String(14 * scale));
      label.setAttribute("class", digit.low_confidence ? "box-label unsure" : "box-label");
      label.textContent = String(digit.digit);
      boxes.append(rect, label);
    });
  }

  buildBars();
  paintPaper();
  showEmpty();
})();
