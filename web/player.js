// The A/B player: two <audio> elements, one heard at a time. Switching hands the
// playback position over, so A and B are compared at the same moment of the track.

export class AbPlayer {
  /** @param {Document} doc the page, with the player's elements (ids ab-*, preview-*) */
  constructor(doc) {
    this.audio = { a: doc.getElementById("preview-a"), b: doc.getElementById("preview-b") };
    this.playButton = doc.getElementById("ab-play");
    this.radios = { a: doc.getElementById("ab-a"), b: doc.getElementById("ab-b") };
    this.position = doc.getElementById("ab-position");
    this.time = doc.getElementById("ab-time");
    this.root = doc.getElementById("ab");
    this.active = "a";

    this.playButton.addEventListener("click", () => this.toggle());
    for (const which of ["a", "b"]) {
      this.radios[which].addEventListener("change", () => {
        if (this.radios[which].checked) this.select(which);
      });
      const audio = this.audio[which];
      audio.addEventListener("timeupdate", () => {
        if (this.active === which) this.#showTime();
      });
      audio.addEventListener("loadedmetadata", () => this.#showTime());
      audio.addEventListener("ended", () => {
        if (this.active === which) this.#showPlaying(false);
      });
    }
    this.position.addEventListener("input", () => {
      this.#current().currentTime = Number(this.position.value);
      this.#showTime();
    });
    // "a" and "b" anywhere on the page, except while typing in a field.
    doc.addEventListener("keydown", (event) => {
      if (this.root.hidden || event.ctrlKey || event.metaKey || event.altKey) return;
      const tag = event.target && event.target.tagName;
      const typing =
        tag === "TEXTAREA" ||
        tag === "SELECT" ||
        (tag === "INPUT" && !["radio", "checkbox", "range", "button"].includes(event.target.type));
      if (typing) return;
      const key = event.key.toLowerCase();
      if (key === "a" || key === "b") {
        event.preventDefault();
        this.select(key);
      }
    });
  }

  /** Load a new pair; stops whatever played. */
  load(urlA, urlB) {
    this.pause();
    this.audio.a.src = urlA;
    this.audio.b.src = urlB;
    this.select("a");
    this.position.value = "0";
    this.#showTime();
  }

  get playing() {
    return !this.#current().paused;
  }

  toggle() {
    if (this.playing) this.pause();
    else this.play();
  }

  play() {
    const audio = this.#current();
    this.#showPlaying(true);
    audio.play().catch(() => this.#showPlaying(false));
  }

  pause() {
    this.audio.a.pause();
    this.audio.b.pause();
    this.#showPlaying(false);
  }

  /** Switch to "a" or "b" at the same position, still playing if it was. */
  select(which) {
    this.radios[which].checked = true;
    if (which === this.active) return;
    const from = this.#current();
    const to = this.audio[which];
    const wasPlaying = !from.paused;
    const at = from.currentTime;
    from.pause();
    to.currentTime = at;
    this.active = which;
    if (wasPlaying) this.play();
    this.#showTime();
  }

  #current() {
    return this.audio[this.active];
  }

  #showPlaying(playing) {
    // The label says what a press does (not aria-pressed, whose label must not change).
    this.playButton.textContent = playing ? "Pause" : "Play";
  }

  #showTime() {
    const audio = this.#current();
    const duration = Number.isFinite(audio.duration) ? audio.duration : 0;
    if (duration) this.position.max = String(duration);
    this.position.value = String(audio.currentTime);
    this.time.value = `${clock(audio.currentTime)} / ${clock(duration)}`;
  }
}

function clock(seconds) {
  const whole = Math.floor(seconds || 0);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}
