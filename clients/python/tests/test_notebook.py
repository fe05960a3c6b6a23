"""Runs the example notebook's code cells against the devnet, without Jupyter."""

from __future__ import annotations

import json
import struct
import sys
import types
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from conftest import MANDELBROT, Devnet, exec_output

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "mandelbrot.ipynb"


def code_cells(path: Path) -> List[str]:
    """The source of each code cell of an nbformat 4 notebook, checking its shape."""
    notebook = json.loads(path.read_text())
    assert notebook["nbformat"] == 4
    sources = []
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("code", "markdown", "raw")
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "outputs are stored"
            sources.append("".join(cell["source"]))
    return sources


def read_png(data: bytes) -> Tuple[int, int, bytes]:
    """Width, height and RGB bytes of an 8-bit RGB PNG with unfiltered rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, {}  # type: Tuple[int, Dict[bytes, bytes]]
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks[kind] = chunks.get(kind, b"") + body
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = width * 3 + 1
    assert len(raw) == height * stride and all(raw[y * stride] == 0 for y in range(height))
    return width, height, b"".join(raw[y * stride + 1 : (y + 1) * stride] for y in range(height))


def stub_ipython(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """Replaces IPython.display with a stub; returns the list of what was displayed."""
    shown: List[Any] = []

    class Image:
        def __init__(self, data: bytes) -> None:
            self.data = data

    display = types.ModuleType("IPython.display")
    display.Image = Image  # type: ignore[attr-defined]
    display.display = lambda *objects: shown.extend(objects)  # type: ignore[attr-defined]
    package = types.ModuleType("IPython")
    package.display = display  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", package)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return shown


@pytest.mark.devnet
def test_the_notebook_renders_the_image(
    devnet: Devnet, idlegrid_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = stub_ipython(monkeypatch)
    monkeypatch.setenv("IDLEGRID_URL", devnet.url)
    monkeypatch.setenv("IDLEGRID_KEY", str(devnet.requestor_key))
    monkeypatch.delenv("IDLEGRID_API_KEY", raising=False)
    monkeypatch.delenv("IDLEGRID_MANDELBROT", raising=False)
    monkeypatch.chdir(NOTEBOOK.parent)  # as Jupyter runs it: relative paths from its folder
    namespace: Dict[str, Any] = {"__name__": "__main__"}
    for number, source in enumerate(code_cells(NOTEBOOK)):
        exec(compile(source, f"{NOTEBOOK.name}[cell {number}]", "exec"), namespace)

    width, height = namespace["WIDTH"], namespace["HEIGHT"]
    assert namespace["final"]["status"] == "finished"
    images = [item for item in shown if hasattr(item, "data")]
    assert len(images) == 1
    png_width, png_height, pixels = read_png(images[0].data)
    assert (png_width, png_height) == (width, height)
    # The tiles pasted together are the whole image rendered as one tile.
    whole = exec_output(
        idlegrid_bin,
        MANDELBROT,
        [str(width), str(height), "0", "0", str(max(width, height)), str(namespace["ITERATIONS"])],
    )
    assert whole.split(b"\n", 3)[3] == pixels
