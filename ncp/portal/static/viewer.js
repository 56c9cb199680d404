// The series viewer: loads every slice in order (progress shown), then scrolls and re-windows them.
// Images come from the portal only; what served each one and how long it took is in its headers.
"use strict";
(function () {
  const viewer = document.getElementById("viewer");
  const image = document.getElementById("image");
  const slider = document.getElementById("slice");
  const position = document.getElementById("position");
  const served = document.getElementById("served");
  const failure = document.getElementById("failure");
  const progress = document.getElementById("progress");
  const preset = document.getElementById("preset");
  let slices = [];
  let current = 0;
  let generation = 0;

  function reset() {
    slices = Array.from(document.querySelectorAll("#slices li")).map((li) => ({ src: li.dataset.src, frame: 0 }));
  }

  function urlOf(slice) {
    const url = new URL(slice.src, window.location.href);
    url.searchParams.set("frame", String(slice.frame));
    url.searchParams.set("preset", preset.value);
    return url.toString();
  }

  function showProgress() {
    const done = slices.filter((s) => s.blob).length;
    progress.setAttribute("aria-valuenow", String(done));
    progress.setAttribute("aria-valuemax", String(slices.length));
    progress.querySelector(".bar").style.width = (100 * done / slices.length) + "%";
    progress.querySelector(".text").textContent = done + " / " + slices.length + " loaded";
    progress.classList.toggle("done", done === slices.length);
    slider.max = String(slices.length);
  }

  function show(index) {
    current = Math.max(0, Math.min(slices.length - 1, index));
    const slice = slices[current];
    slider.value = String(current + 1);
    position.textContent = (current + 1) + " / " + slices.length;
    if (slice && slice.blob) {
      image.src = slice.blob;
      image.dataset.slice = String(current + 1);
      image.dataset.preset = slice.preset;
      served.textContent = "slice " + (current + 1) + (slice.frame ? " (frame " + (slice.frame + 1) + ")" : "") +
        ": " + slice.option + ", " + slice.ms + " ms";
    }
  }

  async function loadAll() {
    const mine = ++generation;
    failure.hidden = true;
    for (let i = 0; i < slices.length; i++) {
      if (mine !== generation) return;
      const slice = slices[i];
      const response = await fetch(urlOf(slice), { credentials: "same-origin" });
      if (!response.ok) {
        failure.hidden = false;
        failure.textContent = "Slice " + (i + 1) + " was refused (" + response.status + "): " + (await response.text());
        return;
      }
      const frames = parseInt(response.headers.get("X-Frames") || "1", 10);
      if (slice.frame === 0 && frames > 1) {
        const more = [];
        for (let f = 1; f < frames; f++) more.push({ src: slice.src, frame: f });
        slices.splice(i + 1, 0, ...more);
      }
      slice.option = response.headers.get("X-Viewing-Option") || "?";
      slice.ms = response.headers.get("X-Served-In-Ms") || "?";
      slice.preset = preset.value;
      slice.blob = URL.createObjectURL(await response.blob());
      showProgress();
      if (i === current) show(current);
    }
    viewer.dataset.loaded = preset.value;
  }

  slider.addEventListener("input", () => show(parseInt(slider.value, 10) - 1));
  image.addEventListener("wheel", (event) => { event.preventDefault(); show(current + (event.deltaY > 0 ? 1 : -1)); });
  document.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowRight") show(current + 1);
    if (event.key === "ArrowUp" || event.key === "ArrowLeft") show(current - 1);
  });
  preset.addEventListener("change", () => {
    delete viewer.dataset.loaded;
    slices.forEach((s) => { if (s.blob) URL.revokeObjectURL(s.blob); });
    reset();
    showProgress();
    loadAll();
  });
  reset();
  showProgress();
  loadAll();
})();
