"""The course's widgets in a real browser: JupyterLab on a loopback port, driven by headless Chromium.

nbval executes the notebooks without a widget frontend, so it cannot see a slider that no longer
redraws its face or an upload button that does nothing. Here each notebook is opened in JupyterLab,
every cell is run, a slider is moved and the picture must change; in notebook 05 a photo is uploaded
and an aligned face must appear.

Run with ``make test-browser`` (it installs Debian's ``chromium`` and ``chromium-driver`` when
missing and sets ``FACELAB_BROWSER=1``); ``make test`` skips this module. The server runs this
checkout's ``facelab`` (``PYTHONPATH``) on the CPU, with autosave off so the committed notebooks
are never rewritten, and everything started here is stopped at the end, also on failure.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

if os.environ.get("FACELAB_BROWSER") != "1":
    pytest.skip("browser tests run with `make test-browser` (FACELAB_BROWSER=1)", allow_module_level=True)

import psutil  # noqa: E402  (ipykernel's dependency)
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ)  # taken at import, before tests/conftest.py points FACELAB_HOME at a tmp folder
NOTEBOOKS = ["00_the_face_world", "01_latent_space_interpretation", "05_your_own_photo"]
UPLOADS = {"05_your_own_photo"}  # notebooks with a FileUpload that must yield an aligned face
RUN_TIMEOUT = float(os.environ.get("FACELAB_BROWSER_TIMEOUT", "900"))  # s per notebook (1-3 min on 2 cores)
WIDGET_TIMEOUT = 60  # s for a widget to render or redraw
LAB_SETTINGS = {  # user settings of the server started here (JupyterLab's settings folder layout)
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},  # never rewrite notebooks/
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the DOM
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}

# JavaScript run in the page; `window.jupyterapp` exists because of --LabApp.expose_app_in_browser.
JS_PANEL = "const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
JS_KERNEL_IDLE = JS_PANEL + """
    const k = w && w.context && w.context.path === arguments[0] && w.sessionContext.session
              && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle';"""
JS_RUN_ALL = JS_PANEL + """
    window.facelabRun = {done: false};
    window.jupyterapp.commands.execute('notebook:run-all-cells').then(
        ok => { window.facelabRun = {done: true, ok: ok}; },
        err => { window.facelabRun = {done: true, ok: false, error: String(err)}; });"""
JS_ERRORS = JS_PANEL + """
    const errors = [];
    for (const cell of w.content.model.cells) {
        if (cell.type !== 'code') continue;
        for (const out of cell.outputs.toJSON())
            if (out.output_type === 'error') errors.push(out.ename + ': ' + out.evalue);
    }
    return errors;"""
# ipywidgets 8's FileUpload keeps its <input type=file> outside the document and clicks it to open
# the native file chooser, which WebDriver cannot drive. This makes such a click attach the input
# (hidden) to the page instead, where WebDriver can type a path into it; the widget's own change
# handler then reads the file as it would after a real choice.
JS_CATCH_FILE_CHOOSER = """
    const click = HTMLInputElement.prototype.click;
    HTMLInputElement.prototype.click = function () {
        if (this.type !== 'file') return click.call(this);
        this.value = '';
        this.setAttribute('data-facelab-upload', '');
        document.body.appendChild(this);
    };"""
JS_CLOSE = JS_PANEL + """
    const done = arguments[arguments.length - 1];
    if (!w || !w.sessionContext) { done(null); return; }
    w.sessionContext.shutdown().catch(() => null).then(() => {
        w.context.model.dirty = false;  // close without the save dialog
        w.dispose();
        done(null);
    });"""


# --- the server --------------------------------------------------------------------------------

def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_lab_settings(folder: Path) -> None:
    """JupyterLab user settings (LAB_SETTINGS) as ``<folder>/<package>/<plugin>.jupyterlab-settings``."""
    for name, values in LAB_SETTINGS.items():
        path = folder / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def lab_command(port: int, token: str, state: Path) -> list[str]:
    """``jupyter lab`` on 127.0.0.1:port serving the repository, with its own settings, workspaces
    and checkpoints under ``state`` (nothing of the user's JupyterLab state is read or written)."""
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
           f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
           "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={state / 'settings'}", f"--LabApp.workspaces_dir={state / 'workspaces'}",
           # an absolute checkpoint dir: no notebooks/.ipynb_checkpoints left in the checkout
           f"--FileCheckpoints.checkpoint_dir={state / 'checkpoints'}"]
    return cmd + (["--allow-root"] if os.geteuid() == 0 else [])


def answers(url: str) -> bool:
    """Whether the server at ``url`` replies 200."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def stop_tree(proc: subprocess.Popen) -> None:
    """Stop the server, its process group and every descendant (kernels run in their own sessions).

    SIGTERM first, so that the server shuts its kernels down; SIGKILL whatever is left after 30 s.
    """
    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    _, alive = psutil.wait_procs(family, timeout=30)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)


def interrupt(signum, frame):
    """SIGTERM (a cancelled CI job, ``timeout``) stops the run like Ctrl-C, so fixtures still tear down."""
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server for this session: yields ``(base_url, token)``, stops everything after."""
    state = tmp_path_factory.mktemp("jupyterlab")
    write_lab_settings(state / "settings")
    port, token = free_port(), secrets.token_hex(16)
    env = {**ENV, "FACELAB_DEVICE": "cpu",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), ENV.get("PYTHONPATH", "")) if p)}
    log = open(state / "server.log", "wb")
    proc = subprocess.Popen(lab_command(port, token, state), cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        WebDriverWait(proc, 120, poll_frequency=0.5).until(
            lambda p: p.poll() is not None or answers(f"{base}/api/status?token={token}"))
        assert proc.poll() is None, f"jupyter lab exited ({proc.returncode}); see {state / 'server.log'}"
        yield base, token
    finally:
        stop_tree(proc)
        log.close()
        signal.signal(signal.SIGTERM, previous)


# --- the browser -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through the system chromedriver, with a large window."""
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver not found: `make test-browser` installs Debian's chromium-driver"
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200"):
        opts.add_argument(arg)
    if shutil.which("chromium"):
        opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_script_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout=WIDGET_TIMEOUT, message=""):
    """``WebDriverWait(driver, timeout).until(condition)`` with a message on timeout; elements that
    are not there yet, or were just re-rendered, count as "not yet"."""
    return WebDriverWait(driver, timeout, poll_frequency=0.5,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                         ).until(condition, message)


def open_notebook(driver, lab, rel_path: str) -> None:
    """Open ``rel_path`` in JupyterLab and wait until its kernel is up and idle."""
    base, token = lab
    driver.get(f"{base}/lab/tree/{rel_path}?token={token}")
    wait(driver, lambda d: d.execute_script(JS_KERNEL_IDLE, rel_path), 180, f"{rel_path}: no idle kernel")


def run_all_cells(driver, rel_path: str) -> None:
    """Run All Cells and wait until the run has finished and the kernel is idle; fail on any error."""
    driver.execute_script(JS_RUN_ALL)
    run = wait(driver, lambda d: (r := d.execute_script("return window.facelabRun")) and r["done"] and r,
               RUN_TIMEOUT, f"{rel_path}: Run All Cells did not finish in {RUN_TIMEOUT:.0f} s")
    wait(driver, lambda d: d.execute_script(JS_KERNEL_IDLE, rel_path), 60, f"{rel_path}: kernel stays busy")
    errors = driver.execute_script(JS_ERRORS)
    assert not errors, f"{rel_path}: cells raised {errors}"
    assert run["ok"], f"{rel_path}: Run All Cells did not complete: {run}"


def widget_errors(driver) -> list[str]:
    """Texts of outputs that show a Python traceback or a widget that failed to render."""
    outputs = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
    return [o.text[:300] for o in outputs if "Traceback" in o.text or "Error displaying widget" in o.text]


def image_srcs(scope) -> tuple[str, ...]:
    """The ``src`` of every image inside ``scope`` (blob: or data: URLs), in order."""
    return tuple(img.get_attribute("src") or "" for img in scope.find_elements(By.TAG_NAME, "img"))


def slider_view(driver):
    """The first face editor: a ``.facelab-editor`` (fl.widgets.SliderEditor), else the output that
    holds the first slider (a hand-made explorer, as in notebook 00)."""
    editors = driver.find_elements(By.CSS_SELECTOR, ".facelab-editor")
    if editors:
        return editors[0]
    return driver.find_element(By.XPATH, "(//div[contains(@class, 'widget-slider')])[1]"
                                         "/ancestor::div[contains(@class, 'jp-OutputArea-output')][1]")


def rendered_slider_view(driver):
    """:func:`slider_view` once all its images have a picture, else False (for ``wait``)."""
    view = slider_view(driver)
    srcs = image_srcs(view)
    return view if srcs and all(srcs) else False


def move_first_slider(driver, rel_path: str) -> None:
    """Move the first slider of the first editor one step with the keyboard (right, or left when it
    sits at its maximum); its readout and its picture must change."""
    view = wait(driver, rendered_slider_view, message=f"{rel_path}: no slider next to a rendered image")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", view)
    before = image_srcs(view)
    readout = view.find_element(By.CSS_SELECTOR, ".widget-readout")
    value = readout.text
    handle = view.find_element(By.CSS_SELECTOR, ".noUi-handle")
    at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    handle.send_keys(Keys.ARROW_LEFT if at_max else Keys.ARROW_RIGHT)
    wait(driver, lambda d: readout.text != value, message=f"{rel_path}: the slider did not move ({value})")
    wait(driver, lambda d: (now := image_srcs(view)) and all(now) and now != before,
         message=f"{rel_path}: slider moved {value} -> {readout.text}, the image did not change")


def photo_to_upload(folder: Path) -> Path:
    """matplotlib's Grace Hopper photo, mirrored: a clear frontal face that differs from the photo a
    notebook may show before any upload (05 starts with the original), so the upload must show."""
    import matplotlib.cbook
    from PIL import Image, ImageOps

    path = folder / "grace_hopper_mirrored.jpg"
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        ImageOps.mirror(im.convert("RGB")).save(path, quality=95)
    return path


def upload_photo(driver, rel_path: str, photo: Path) -> None:
    """Upload ``photo`` through the notebook's FileUpload button; the aligned face (an image with
    the DOM class ``facelab-aligned``) must change from what it showed before."""
    aligned = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "img.facelab-aligned, .facelab-aligned img"),
                   message=f"{rel_path}: no image with the class facelab-aligned")[0]
    before = aligned.get_attribute("src") or ""
    driver.execute_script(JS_CATCH_FILE_CHOOSER)
    button = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".widget-upload"),
                  message=f"{rel_path}: no FileUpload widget")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)
    button.click()
    file_input = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "input[type=file][data-facelab-upload]"),
                      message=f"{rel_path}: the FileUpload button opened no file input")
    file_input.send_keys(str(photo))
    wait(driver, lambda d: (src := aligned.get_attribute("src")) and src != before, RUN_TIMEOUT / 3,
         f"{rel_path}: no aligned face appeared after uploading {photo.name}")


@pytest.fixture
def notebook(request, browser, lab):
    """Open ``notebooks/<name>.ipynb`` (skip when absent); shut its kernel down and close it after,
    and check that the file on disk was not rewritten."""
    path = ROOT / "notebooks" / f"{request.param}.ipynb"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} does not exist in this checkout")
    rel_path, saved = str(path.relative_to(ROOT)), path.read_bytes()
    open_notebook(browser, lab, rel_path)
    yield rel_path
    browser.execute_async_script(JS_CLOSE)
    assert path.read_bytes() == saved, f"{rel_path} was rewritten by the browser session"


@pytest.mark.parametrize("notebook", NOTEBOOKS, indirect=True)
def test_notebook_runs_and_its_widgets_respond(browser, notebook, tmp_path):
    """All cells run without an error, a slider redraws its face, an upload yields an aligned face."""
    run_all_cells(browser, notebook)
    if Path(notebook).stem in UPLOADS:
        upload_photo(browser, notebook, photo_to_upload(tmp_path))
    move_first_slider(browser, notebook)
    assert not widget_errors(browser), f"{notebook}: {widget_errors(browser)}"
