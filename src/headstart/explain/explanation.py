"""One item's explanation, and how it is shown: a heat-map overlay (PNG) for an image, highlighted
words (HTML) for a text."""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Explanation:
    """Why the model gave ``item`` the class ``label`` (probability ``probability``), by ``method``.

    ``scores``: ``[S, S]`` over the pixels of ``image`` (the crop the backbone sees), or one score
    per word of ``text`` (``spans`` are the words' character spans; ``dropped`` words lay past the
    model's token window and were not read). Higher = more evidence for ``label``. ``note``: why
    these maps are not verified faithful for this kind of data ("" when the method was verified).
    """

    item: str
    modality: str
    method: str
    label: str
    target: int
    probability: float
    scores: np.ndarray
    image: np.ndarray | None = None
    text: str = ""
    spans: list[tuple[int, int]] = field(default_factory=list)
    dropped: int = 0
    note: str = ""

    def words(self) -> list[str]:
        return [self.text[a:b] for a, b in self.spans]

    def top_words(self, k: int = 10) -> list[tuple[str, float]]:
        order = np.argsort(-self.scores, kind="stable")[:k]
        return [(self.text[self.spans[j][0]:self.spans[j][1]], float(self.scores[j])) for j in order]

    def overlay_png(self, alpha: float = 0.55, size: int | None = None) -> bytes:
        """The image with the positive evidence laid over it as a heat map (PNG bytes)."""
        from matplotlib import colormaps
        from PIL import Image

        assert self.image is not None
        s = np.clip(self.scores, 0, None)
        s = s / s.max() if s.max() > 0 else s
        heat = colormaps["inferno"](s)[..., :3]
        weight = alpha * s[..., None] ** 0.5  # faint evidence shows faintly, strong evidence covers the pixel
        mixed = (1 - weight) * (self.image / 255.0) + weight * heat
        img = Image.fromarray((mixed * 255).round().astype(np.uint8))
        if size is not None and size != img.width:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def image_png(self, size: int | None = None) -> bytes:
        from PIL import Image

        assert self.image is not None
        img = Image.fromarray(self.image)
        if size is not None and size != img.width:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def words_html(self) -> str:
        """The text with every word it read shaded: orange for evidence for ``label``, blue against;
        the stronger, the darker. Escaped, so a text cannot inject markup."""
        peak = float(np.abs(self.scores).max()) if len(self.scores) else 0.0
        parts, pos = [], 0
        for (a, b), v in zip(self.spans, self.scores):
            parts.append(html.escape(self.text[pos:a]))
            w = 0.0 if peak == 0 else float(v) / peak
            colour = f"rgba(230,120,0,{abs(w):.2f})" if w >= 0 else f"rgba(40,110,220,{abs(w):.2f})"
            parts.append(f'<span class="w" style="background:{colour}" title="{float(v):+.3g}">'
                         f"{html.escape(self.text[a:b])}</span>")
            pos = b
        end = self.spans[-1][1] if self.spans else 0
        rest = self.text[end:]
        if self.dropped and rest.strip():
            parts.append(f'<span class="cut">{html.escape(rest[:200])}{"…" if len(rest) > 200 else ""} '
                         f"[{self.dropped} more words past the model's window, not read]</span>")
        else:
            parts.append(html.escape(rest))
        return "".join(parts)

    def to_dict(self, grid: int = 14) -> dict[str, Any]:
        """JSON-able summary: the words and their scores, or the pixel scores pooled on a grid."""
        out: dict[str, Any] = {"item": self.item, "method": self.method, "label": self.label,
                               "probability": round(self.probability, 6)}
        if self.modality == "text":
            out["words"] = [{"word": w, "score": round(float(v), 6)} for w, v in zip(self.words(), self.scores)]
            out["words_past_window"] = self.dropped
        else:
            s = self.scores
            cells = np.array_split(np.arange(s.shape[0]), grid)
            out["grid"] = [[round(float(s[np.ix_(r, c)].mean()), 6) for c in cells] for r in cells]
        if self.note:
            out["not_verified"] = self.note
        return out
