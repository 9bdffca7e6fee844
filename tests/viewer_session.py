"""Drive the edit panel of a running instance-viewer from a headless Chromium, as a user would: pick the instance
output, click objects where the rendered room shows them, merge, split, undo, name, save and export.

Objects are found on screen by their colour: the "instance" output paints id i with the palette colour of i, so the
pixels of an id in a screenshot are where to click it (the farthest pixel from the region's border)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import numpy as np

from instance_nerfacto.core.palette import palette
from tests.browser import Browser

PALETTE = palette().astype(np.int64)
FULL_SIZE = 512
"""The longer side of the viewer's full-size render at its default "Max res"."""
CANVAS_RECT = "(() => { const r = document.querySelector('canvas').getBoundingClientRect(); " \
              "return [r.left, r.top, r.width, r.height]; })()"


def wait_for(condition: Callable[[], object], timeout: float, what: Union[str, Callable[[], str]], every: float = 1.0):
    """Poll ``condition`` until it holds; on timeout raise with ``what`` (a callable is asked then, so the error can
    say what was on screen instead)."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(every)


def wanted_colour(label: int, bright: bool = True) -> np.ndarray:
    """The palette colour of ``label`` as the viewer shows it: bright when highlighted (or nothing is selected), a
    quarter of it when dimmed."""
    return PALETTE[label] if bright else (PALETTE[label] * 0.25).astype(np.int64)


class ViewerPage:
    """The viewer page of one run, its canvas, and the server's log."""

    def __init__(self, browser: Browser, url: str, log: Path, max_id: int) -> None:
        self.browser, self.log, self.max_id = browser, log, max_id
        browser.goto(url)
        wait_for(lambda: browser.eval("document.querySelector('canvas') !== null"), 180, "the viewer page")
        self.rect = browser.eval(CANVAS_RECT)
        self._visible = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def show_instance_output(self, timeout: float = 600) -> None:
        """Choose the 'instance' output in the 'Output type' dropdown (listed once the first render is done)."""
        wait_for(lambda: self.browser.find_text("Output type"), 180, "the control panel")
        deadline = time.time() + timeout
        while True:
            box = self.browser.eval("""(() => { const l = [...document.querySelectorAll('label')]
                .find(n => n.textContent.trim() === 'Output type');
                const input = l && document.getElementById(l.htmlFor);
                const r = (input || l).getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2]; })()""")
            self.browser.click(*box)
            time.sleep(1.0)
            where = self.browser.find_text("instance")
            if where is not None:
                self.browser.click(*where)
                return
            self.browser.click(*box)  # close the list; the outputs are not known before the first render
            if time.time() > deadline:
                raise TimeoutError("the viewer never listed the 'instance' output")
            time.sleep(5.0)

    def wait_for_full_size(self, timeout: float = 600) -> np.ndarray:
        """The ids on screen once the viewer has rendered the view at full size (its previews are a few dozen pixels
        high: clicks picked from a preview's blocks can land on another object than the one the click ray hits)."""

        def full_size() -> bool:
            sizes = re.findall(r"instance-nerfacto viewer render(?: \(\w+\))?: (\d+)x(\d+) px", self.log_text())
            return any(max(int(w), int(h)) >= FULL_SIZE for w, h in sizes)

        wait_for(full_size, timeout, "a full-size render")
        shots: List[np.ndarray] = []

        def settled() -> bool:  # the same picture twice: the full-size render is on screen
            shots.append(self.ids_on_screen())
            return len(shots) > 1 and np.array_equal(shots[-2], shots[-1])

        wait_for(settled, 120, "the full-size picture on screen", every=2.0)
        return shots[-1]

    def renders(self) -> List[Tuple[str, int, int, float]]:
        """(renderer, width, height, seconds) of every real render the viewer logged, in order."""
        return [(how, int(w), int(h), float(s)) for how, w, h, s in re.findall(
            r"instance-nerfacto viewer render \((\w+)\): (\d+)x(\d+) px in ([0-9.]+) s", self.log_text())]

    def timings(self) -> List[Tuple[str, float, str, float, str]]:
        """(what, s to the first render showing it, how, s to the full-size one, how) per timed click or edit."""
        return [(what, float(first), how, float(full), full_how) for what, first, how, full, full_how in re.findall(
            r"viewer timing: (.+?) -> highlighted render ([0-9.]+) s \(([^)]*)\); full size ([0-9.]+) s \(([^)]*)\)",
            self.log_text())]

    def type_into(self, label: str, text: str) -> None:
        """Type into the text field of a labelled control (its value reaches the server as it changes)."""
        box = self.browser.eval("""(() => { const l = [...document.querySelectorAll('label')]
            .find(n => n.textContent.trim() === %s); const row = l && l.closest('.mantine-Flex-root');
            const input = l && (document.getElementById(l.htmlFor) || (row && row.querySelector('input')));
            if (!input) return null; input.scrollIntoView({block: 'center'}); input.focus();
            const r = input.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()"""
                                % repr(label))
        assert box is not None, f"no text field labelled {label}"
        self.browser.click(*box)
        self.browser.type_text(text)
        time.sleep(2.0)

    def visible(self, step: int = 8) -> np.ndarray:
        """Which canvas pixels the page shows (not under the control panel or the title bar), at ``step`` px."""
        left, top, width, height = self.rect
        hits = self.browser.eval(f"""(() => {{ const out = [];
            for (let y = {top} + {step} / 2; y < {top + height}; y += {step}) {{ const row = [];
              for (let x = {left} + {step} / 2; x < {left + width}; x += {step}) {{
                const e = document.elementFromPoint(x, y); row.push(e !== null && e.tagName === 'CANVAS'); }}
              out.push(row); }}
            return out; }})()""")
        mask = np.repeat(np.repeat(np.array(hits, dtype=bool), step, axis=0), step, axis=1)
        full = np.zeros((int(round(height)), int(round(width))), dtype=bool)
        full[: mask.shape[0], : mask.shape[1]] = mask[: full.shape[0], : full.shape[1]]
        return full

    def canvas(self) -> np.ndarray:
        shot = self.browser.screenshot()
        left, top, width, height = (int(round(v)) for v in self.rect)
        return shot[top : top + height, left : left + width]

    def ids_on_screen(self, tolerance: int = 45) -> np.ndarray:
        """Id of every canvas pixel by its palette colour (0 where no palette colour is close)."""
        image = self.canvas().astype(np.int64)
        candidates = PALETTE[1 : self.max_id + 1]
        dist = np.abs(image[:, :, None, :] - candidates[None, None]).sum(-1)
        best = dist.argmin(-1)
        if self._visible is None:
            self._visible = self.visible()
        visible = self._visible[: image.shape[0], : image.shape[1]]
        return np.where((dist.min(-1) <= tolerance) & visible, best + 1, 0)

    def colour_at(self, xy: Tuple[int, int]) -> np.ndarray:
        top, left = max(xy[1] - 1, 0), max(xy[0] - 1, 0)
        patch = self.canvas()[top : xy[1] + 2, left : xy[0] + 2].reshape(-1, 3)
        return np.median(patch, axis=0)

    def describe(self, xy: Tuple[int, int], label: int, bright: bool = True) -> str:
        """What a failed :meth:`shows` saw: the colour at ``xy``, the one wanted, and the id the colour is nearest."""
        want = wanted_colour(label, bright)
        seen = self.colour_at(xy)
        nearest = int(np.abs(PALETTE[1 : self.max_id + 1] - seen).sum(-1).argmin()) + 1
        return (f"{xy}: colour {seen.astype(int).tolist()}, want {want.tolist()} (id {label}), "
                f"nearest bright id {nearest}")

    def shows(self, xy: Tuple[int, int], label: int, bright: bool = True, tolerance: int = 45) -> bool:
        """Whether the pixel shows ``label`` (bright or dimmed): its colour within ``tolerance`` of that colour, or
        nearest to it among every id's bright and dimmed colours and within twice the tolerance. Near the 3D border
        of a split the label field blends the two parts' ids (a new part's seed read 80% of its bright colour and 20%
        of the dimmed rest: 64 from the palette colour, yet nearest to it)."""
        seen = self.colour_at(xy)
        dist = int(np.abs(seen - wanted_colour(label, bright)).sum())
        if dist <= tolerance:
            return True
        ids = np.arange(1, self.max_id + 1)
        others = np.concatenate([[wanted_colour(i, True) for i in ids], [wanted_colour(i, False) for i in ids]])
        return dist <= 2 * tolerance and dist <= int(np.abs(others - seen).sum(-1).min())

    def click_canvas(self, xy: Tuple[int, int]) -> None:
        self.browser.click(self.rect[0] + xy[0], self.rect[1] + xy[1])

    def status_lines(self) -> List[str]:
        return re.findall(r"instance-nerfacto viewer: (.*)", self.log_text())

    def act(self, action: Callable[[], None], timeout: float = 240) -> str:
        """Run a UI action and return the viewer's report of it (its next log line)."""
        before = len(self.status_lines())
        action()
        wait_for(lambda: len(self.status_lines()) > before, timeout, "the viewer's report of the action")
        return self.status_lines()[before]


def regions(ids: np.ndarray, min_pixels: int = 150) -> Dict[int, Tuple[int, np.ndarray]]:
    """Per id on screen: its pixel count and the interior distance map of its largest blob."""
    from scipy import ndimage

    out = {}
    for label in np.unique(ids):
        if label == 0:
            continue
        blobs, count = ndimage.label(ids == label)
        if count == 0:
            continue
        sizes = ndimage.sum(np.ones_like(ids), blobs, index=np.arange(1, count + 1))
        biggest = int(np.argmax(sizes)) + 1
        if sizes[biggest - 1] >= min_pixels:
            # padded: the canvas's edge is a border too (a click there may fall off the picture)
            inner = ndimage.distance_transform_edt(np.pad(blobs == biggest, 1))[1:-1, 1:-1]
            out[int(label)] = (int(sizes[biggest - 1]), inner)
    return out


def interior_point(distance: np.ndarray) -> Tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(col), int(row)


def two_far_points(distance: np.ndarray) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Two pixels of a blob far apart and well inside it (for a split: one seed each). Near its border a click ray
    can miss the object (its surface point would be behind it), so both keep half the blob's largest inner radius
    from the border."""
    rows, cols = np.nonzero(distance >= distance.max() * 0.5)
    first = np.argmin(cols + rows * 1e-3)
    second = np.argmax(np.hypot(rows - rows[first], cols - cols[first]))
    return (int(cols[first]), int(rows[first])), (int(cols[second]), int(rows[second]))
