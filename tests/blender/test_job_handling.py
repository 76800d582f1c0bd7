"""Job handling an artist meets (issue 16, section 9): re-import from a list of finished takes,
a cancelled job leaves no folder, the jobs folder does not move when the .blend is saved, and
no file handle of the backend is left open."""
import gc
import time
import warnings

import bpy

import facecap_helpers as h


def test_reimport_lists_finished_takes_by_name(addon, fitted_job):
    from facecap import operators
    items = operators.finished_job_items(bpy.context)
    assert (str(fitted_job), items[0][1], str(fitted_job)) in items
    label = next(label for folder, label, _ in items if folder == str(fitted_job))
    assert label.startswith("talk, ")  # the take's name and when it finished, not job.json or result/


def test_a_cancelled_job_leaves_no_folder(addon):
    from facecap import operators
    h.synthetic_settings(frames=40, take="cancelled")
    job = operators.start_fit(bpy.context)
    h.run_until(lambda: job.stage.startswith("fitting"), job)
    operators.cancel_fit()
    h.run_until_ended(job)
    assert job.status == "cancelled"
    assert not job.folder.exists()


def test_the_jobs_folder_stays_where_the_first_fit_put_it(addon, tmp_path):
    from facecap import operators, preferences
    h.preferences().jobs_folder = ""
    (tmp_path / "first").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "first" / "shot.blend"))
    h.synthetic_settings(frames=4, take="stays")
    job = h.run_until_ended(operators.start_fit(bpy.context))
    assert job.folder.parent == tmp_path / "first" / "facecap_jobs"
    (tmp_path / "second").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "second" / "shot.blend"))
    assert preferences.jobs_root(bpy.context) == tmp_path / "first" / "facecap_jobs"


def test_stopping_the_backend_closes_its_pipes(addon):
    from facecap import jobs, operators
    from facecap.state import SESSION
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        process = jobs.ensure_backend(SESSION, h.BACKEND_PYTHON)
        deadline = time.monotonic() + 60
        while SESSION.hello is None and time.monotonic() < deadline:
            operators.tick(bpy.context)
            time.sleep(0.05)
        jobs.stop_backend(SESSION)
        process._stderr_thread.join(5)
        del process
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
