"""Text for the panels: lines wrapped at word boundaries to fit the sidebar's width."""
from pathlib import Path

HELP_SECTION = "blender-add-on"   # the README's anchor for "## Blender add-on"

CHAR_WIDTH_PX = 7.0   # a label character at UI scale 1 (Blender's default font, about 11 px high)


def chars_that_fit(region_width_px: float, ui_scale: float = 1.0, margin_px: float = 40.0) -> int:
    """How many characters of a label fit in a region of this width (at least 20)."""
    return max(20, int((region_width_px - margin_px * ui_scale) / (CHAR_WIDTH_PX * ui_scale)))


def wrap(text: str, width: int) -> list:
    """Lines of at most ``width`` characters, broken between words; a word longer than a line
    (a path) is cut into pieces of the line's width rather than cut off."""
    lines, line = [], ""
    for word in text.split():
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


def help_url(sources: Path) -> str:
    """The README's add-on section (the README ships with the add-on's backend sources)."""
    return (Path(sources) / "README.md").resolve().as_uri() + "#" + HELP_SECTION
