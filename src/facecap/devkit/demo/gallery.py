"""An HTML page of the stored faces with their metadata, written next to the demo's store."""

from __future__ import annotations

import html
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from .inventory import StoredObject


def write_gallery(folder: Path, faces: list[StoredObject], read_body: Callable[[str], bytes],
                  title: str = "facecap — stored faces", summary: dict[str, str] | None = None) -> Path:
    """Copy each face image into `folder`/images and write `folder`/index.html. Returns the page."""
    images = folder / "images"
    shutil.rmtree(images, ignore_errors=True)  # an earlier gallery's images; the page lists only these faces
    images.mkdir(parents=True)
    cards = []
    for number, face in enumerate(sorted(faces, key=lambda f: f.key), start=1):
        name = f"{number:05d}_{Path(face.key).name}"
        (images / name).write_bytes(read_body(face.key))
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in sorted(face.metadata.items()) if k != "sha256"
        )
        cards.append(
            f'<figure><img src="images/{html.escape(name)}" alt="face {html.escape(face.face_id)}">'
            f"<figcaption><code>{html.escape(face.key)}</code><table>{rows}</table></figcaption></figure>"
        )
    facts = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in (summary or {}).items())
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; padding: .5rem; border: 1px solid #ccc; border-radius: 6px; width: 260px; }}
img {{ width: 100%; height: auto; background: #eee; }}
table {{ font-size: 12px; border-collapse: collapse; }}
th {{ text-align: left; padding-right: .5rem; color: #555; }}
code {{ font-size: 11px; word-break: break-all; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(faces)} face(s), written {written}.</p><ul>{facts}</ul>
<div class="grid">{"".join(cards)}</div>
</body></html>
"""
    index = folder / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
