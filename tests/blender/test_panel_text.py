"""Panel text an artist reads (issue 16): lines wrap between words (a long path is split, never
cut off), the landmark choices are plain words, Help opens the README's add-on section, and the
backend shows as ready only once it has answered hello."""
import time
from pathlib import Path
from urllib.parse import urlparse, unquote

import bpy

import facecap_helpers as h


def test_wrap_breaks_between_words_and_keeps_every_character():
    from facecap import text
    message = ("gui_take: the video file of strip 'actor' is missing: "
               "/home/artist/projects/a_very_long_folder_name_for_the_shoot/take_0001.mov")
    lines = text.wrap(message, 30)
    assert all(len(line) <= 30 for line in lines)
    assert "".join(lines).replace(" ", "") == message.replace(" ", "")  # nothing cut off
    assert lines[0] == "gui_take: the video file of"  # whole words on ordinary lines


def test_chars_that_fit_grow_with_the_sidebar_and_shrink_with_ui_scale():
    from facecap import text
    assert text.chars_that_fit(600) > text.chars_that_fit(300) >= 20
    assert text.chars_that_fit(600, ui_scale=2.0) < text.chars_that_fit(600)


def test_landmark_choices_are_plain_words(addon):
    prefs = h.preferences()
    items = {i.identifier: i.name for i in prefs.bl_rna.properties["landmark_model"].enum_items}
    assert items["WHOLE_HEAD"] == "MediaPipe face + whole head (default)"
    assert not {"Bootstrap", "Dense"} & set(items.values())
    sources = {i.name for i in bpy.context.scene.facecap.bl_rna.properties["source"].enum_items}
    assert "Synthetic shot" not in sources


def test_help_opens_the_readme_section_shipped_with_the_addon(addon, tmp_path):
    import importlib.util
    from facecap import backend, text
    url = text.help_url(backend.backend_sources())
    parsed = urlparse(url)
    assert parsed.scheme == "file" and parsed.fragment == "blender-add-on"
    readme = Path(unquote(parsed.path)).read_text()
    assert "\n## Blender add-on\n" in readme  # the anchor's heading
    spec = importlib.util.spec_from_file_location("build_addon", h.ROOT / "build_addon.py")
    build_addon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_addon)
    assert "backend/README.md" in build_addon.package_files()  # installed copies carry it too


def test_the_backend_counts_as_ready_only_after_it_answers_hello(addon, backend_python):
    from facecap import jobs, operators, preferences
    from facecap.state import SESSION
    jobs.stop_backend(SESSION)
    assert SESSION.hello is None
    assert bpy.ops.facecap.check_backend() == {"FINISHED"}
    deadline = time.monotonic() + 60
    while SESSION.hello is None:
        assert time.monotonic() < deadline, "the backend did not answer hello"
        operators.tick(bpy.context)
        time.sleep(0.05)
    assert SESSION.backend_python == preferences.backend_python(bpy.context)
