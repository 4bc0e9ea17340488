"""The rules catalogue: which calls block the event loop, and what to do instead.

A rule is one kind of blocking call (`SL101`: module-level `requests` functions). The tables
below say which calls belong to which rule:

- `FUNCTIONS`: qualified names of functions (`"requests.get"`, `"os.walk"`, `"builtins.open"`).
- `METHODS`: methods of values whose type the checker inferred (`"requests.Session"` and its
  `get`), with `"*"` for "every method but these".
- `CONSTRUCTORS`, `ANNOTATIONS`, `RETURNS`, `ATTRIBUTES`, `ELEMENTS`, `ENTERS`: how values get
  those types (`requests.Session()` makes a `requests.Session`, `Path.parent` is a `Path`, an
  item of `Path.iterdir()` is a `Path`, `with sqlite3.connect(...) as conn` binds a connection).

Types are internal names, not import paths: `"pathlib.Path"` stands for every concrete path
class, `"dbapi.Connection"` for the connections of several drivers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CATEGORIES",
    "PROJECT_RULE",
    "RULES",
    "RULES_BY_ID",
    "Match",
    "NonBlocking",
    "Rule",
    "UnknownRule",
    "select_rules",
]


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind of blocking call."""

    id: str
    #: Short kebab-case name, shown next to the id (`requests-call`).
    name: str
    #: Key of `CATEGORIES` (`"http"`, `"files"`, ...).
    category: str
    #: What is flagged, as one sentence.
    summary: str
    #: The bulkhead domain suggested in fixes; None when the fix is an async equivalent.
    domain: str | None
    #: The fix, a template: `{domain}`, `{func}` (the callee as written), `{args}` (its
    #: arguments, with a leading comma), `{arglist}` (its arguments alone), `{call}`.
    fix: str
    #: The async alternative, when one exists.
    alternative: str = ""
    #: ruff ASYNC rules that flag some of the same calls.
    ruff: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NonBlocking:
    """A call argument that makes an otherwise blocking call return at once.

    `when` is `"false"` (the argument is the constant False or 0, as `blocking=False`),
    `"zero"` (the constant 0, as `timeout=0`) or `"wnohang"` (the expression names WNOHANG).
    """

    keyword: str
    position: int | None
    when: str


@dataclass(frozen=True, slots=True)
class Match:
    """How one function or method maps to a rule."""

    rule: str
    #: Replaces the rule's fix template for this call.
    fix: str | None = None
    #: The call returns a lazy iterator: it does no I/O until iterated, so handing the call's
    #: result to `iterate_in_thread` (or another offloading function) is fine.
    lazy: bool = False
    #: Arguments that make the call non-blocking.
    nonblocking: tuple[NonBlocking, ...] = ()
    #: Only flagged when the call has at least one argument (a constructor that connects
    #: when given a host, like `smtplib.SMTP(host)`).
    needs_args: bool = False


@dataclass(frozen=True, slots=True)
class MethodTable:
    """The blocking methods of one inferred type."""

    methods: Mapping[str, Match]
    #: Every other method not listed in `except_` is blocking too, with this match.
    wildcard: Match | None = None
    except_: frozenset[str] = field(default_factory=frozenset)
    #: With `wildcard`: methods whose name starts with an upper-case letter are exempt
    #: (boto3 sub-resource constructors such as `s3.Bucket(name)` do no I/O).
    except_capitalized: bool = False

    def lookup(self, method: str) -> Match | None:
        found = self.methods.get(method)
        if found is not None:
            return found
        if self.wildcard is None or method in self.except_ or method.startswith("_"):
            return None
        if self.except_capitalized and method[:1].isupper():
            return None
        return self.wildcard


#: Category key -> title, in catalogue order.
CATEGORIES: dict[str, str] = {
    "http": "SL1xx HTTP clients",
    "sleep": "SL2xx sleeps and console input",
    "files": "SL3xx files and paths",
    "subprocess": "SL4xx subprocesses",
    "db": "SL5xx databases",
    "net": "SL6xx sockets, DNS and protocol clients",
    "wait": "SL7xx waits on threads and processes",
    "devices": "SL8xx cameras, serial ports and I2C devices",
    "project": "SL9xx project-specific (configured)",
}

_WRAP = 'await sl.run_blocking("{domain}", {func}{args})'
_FS_BLOCK = (
    'await sl.run_blocking("fs", fn) with the file work moved into a sync function `fn` '
    "(or `await steadyloop.files.read_bytes(path)` / `write_atomic(path, data)`)"
)

RULES: tuple[Rule, ...] = (
    # --- SL1xx HTTP ---------------------------------------------------------------------------
    Rule(
        "SL101",
        "requests-call",
        "http",
        "A module-level `requests` function (`requests.get`, `post`, ..., `request`).",
        "http",
        _WRAP,
        "an async client: `httpx.AsyncClient` (`await client.get(url)`)",
        ("ASYNC210",),
    ),
    Rule(
        "SL102",
        "requests-session",
        "http",
        "A request method of a `requests.Session` (a local, a module global, an attribute set "
        "in `__init__`, an annotated parameter, a subclass).",
        "http",
        _WRAP,
        "one shared `httpx.AsyncClient`",
    ),
    Rule(
        "SL103",
        "urllib-call",
        "http",
        "`urllib.request.urlopen`/`urlretrieve`, an opener's `open`, `urllib3` (module "
        "`request`, pool managers), `http.client` connections.",
        "http",
        _WRAP,
        "`httpx.AsyncClient`",
        ("ASYNC210",),
    ),
    Rule(
        "SL104",
        "httpx-sync",
        "http",
        "A module-level `httpx` function (`httpx.get`, ...) or a method of a sync `httpx.Client`.",
        "http",
        _WRAP,
        "`httpx.AsyncClient` with the same arguments, awaited",
        ("ASYNC210", "ASYNC212"),
    ),
    Rule(
        "SL105",
        "google-api-execute",
        "http",
        "`.execute()` (and `next_chunk()`) of a googleapiclient request: the request "
        "chain of a `build(...)` service, or a `x.y(...).execute()` chain in a module that "
        "imports googleapiclient.",
        "google",
        _WRAP,
        "",
    ),
    Rule(
        "SL106",
        "boto3-call",
        "http",
        "Creating a boto3 client or resource (reads credentials and service models from "
        "disk) and every API method of one (`s3.get_object`, `bucket.upload_file`).",
        "aws",
        _WRAP,
        "aioboto3 / aiobotocore",
    ),
    # --- SL2xx sleeps and console input ---------------------------------------------------------
    Rule(
        "SL201",
        "time-sleep",
        "sleep",
        "`time.sleep`, however imported.",
        None,
        "await asyncio.sleep({arglist})",
        "",
        ("ASYNC251",),
    ),
    Rule(
        "SL202",
        "console-input",
        "sleep",
        "`input()` and `getpass.getpass()`: they wait for a person at a terminal.",
        "console",
        _WRAP,
        "",
        ("ASYNC250",),
    ),
    # --- SL3xx files and paths ------------------------------------------------------------------
    Rule(
        "SL301",
        "open-call",
        "files",
        "Opening or creating a file: `open`, `io.open`, `Path.open`, `codecs`/`gzip`/`bz2`/"
        "`lzma`/`tarfile` open, `zipfile.ZipFile`, `tempfile` files and folders.",
        "fs",
        _FS_BLOCK,
        "`steadyloop.files`, aiofiles or `anyio.open_file`",
        ("ASYNC230",),
    ),
    Rule(
        "SL302",
        "path-io",
        "files",
        "A `pathlib.Path` method that touches the file system (`read_text`, `write_bytes`, "
        "`exists`, `stat`, `mkdir`, `unlink`, `iterdir`, `glob`, `rglob`, `resolve`, ...) on a "
        "value known to be a path: `Path(...)`, a path variable, parameter or attribute, "
        "`path / 'x'`, `path.parent`.",
        "fs",
        _WRAP,
        "`anyio.Path` or `steadyloop.files`",
        ("ASYNC240",),
    ),
    Rule(
        "SL303",
        "os-path-io",
        "files",
        "An `os.path` function that touches the file system (`exists`, `isfile`, `isdir`, "
        "`getsize`, `getmtime`, `realpath`, `abspath`, `expanduser`, ...).",
        "fs",
        _WRAP,
        "`await steadyloop.files.exists(path)` / `stat(path)`, or `aiofiles.os.path`",
        ("ASYNC240",),
    ),
    Rule(
        "SL304",
        "os-fs-call",
        "files",
        "An `os` or `glob` file-system function: `os.walk`, `listdir`, `scandir`, `stat`, "
        "`remove`, `makedirs`, `rename`, `open`, `glob.glob`, ...",
        "fs",
        _WRAP,
        "`aiofiles.os`",
    ),
    Rule(
        "SL305",
        "shutil-call",
        "files",
        "A `shutil` function: `copy`, `copytree`, `rmtree`, `move`, `make_archive`, "
        "`disk_usage`, `which`, ...",
        "fs",
        _WRAP,
        "",
    ),
    Rule(
        "SL306",
        "file-object-io",
        "files",
        "A method of an open file object: `f.read()`, `f.write()`, `f.readline()`, ... where "
        "`f` came from `open()`, `io.open`, `os.fdopen`, `Path.open()`, `codecs`/`gzip` open, "
        "a `with open(...) as f`, or is annotated `io.TextIOWrapper`, `io.Buffered*`, "
        "`typing.IO` / `TextIO` / `BinaryIO`.",
        "fs",
        'await sl.run_blocking("fs", fn) with the file work moved into a sync function `fn`',
        "aiofiles or `anyio.wrap_file(f)`",
        ("ASYNC232",),
    ),
    # --- SL4xx subprocesses ---------------------------------------------------------------------
    Rule(
        "SL401",
        "subprocess-run",
        "subprocess",
        "Running a process to completion: `subprocess.run`/`call`/`check_call`/"
        "`check_output`/`getoutput`, `os.system`, `os.posix_spawn`, `os.spawn*(P_WAIT)`.",
        "subprocess",
        _WRAP,
        "`await asyncio.create_subprocess_exec(...)` then `await proc.communicate()`",
        ("ASYNC221",),
    ),
    Rule(
        "SL402",
        "subprocess-popen",
        "subprocess",
        "Starting a process with a blocking API: `subprocess.Popen`, `os.popen`, "
        "`os.spawn*` without P_WAIT.",
        "subprocess",
        "await asyncio.create_subprocess_exec(...)",
        "`asyncio.create_subprocess_exec` / `create_subprocess_shell`",
        ("ASYNC220",),
    ),
    Rule(
        "SL403",
        "process-wait",
        "subprocess",
        "Waiting for a process: `os.wait`/`waitpid`/... (not with WNOHANG), "
        "`Popen.wait()`, `Popen.communicate()`.",
        "subprocess",
        _WRAP,
        "an `asyncio.subprocess.Process`: `await proc.wait()`",
        ("ASYNC222",),
    ),
    # --- SL5xx databases ------------------------------------------------------------------------
    Rule(
        "SL501",
        "sqlite3-call",
        "db",
        "`sqlite3.connect` and the statements of a sqlite3 connection or cursor (`execute`, "
        "`executemany`, `commit`, `fetchall`, ...).",
        "db",
        _WRAP,
        "steadyloop's SQLite writer and readers (`steadyloop.db`), or aiosqlite",
    ),
    Rule(
        "SL502",
        "postgres-sync",
        "db",
        "`psycopg2.connect` / sync `psycopg.connect`, sync pools, and the statements of "
        "their connections and cursors.",
        "db",
        _WRAP,
        "asyncpg or `psycopg.AsyncConnection`",
    ),
    Rule(
        "SL503",
        "dbapi-call",
        "db",
        "Other sync DB-API drivers (pymysql, MySQLdb, mysql.connector, pyodbc, oracledb, "
        "cx_Oracle, pymssql): `connect` and statements.",
        "db",
        _WRAP,
        "an async driver (aiomysql, asyncmy, ...)",
    ),
    Rule(
        "SL504",
        "redis-sync",
        "db",
        "A command of a sync redis client (`redis.Redis`, `from_url`, `RedisCluster`), a "
        "pipeline's `execute`, pubsub reads, redis locks.",
        "redis",
        _WRAP,
        "`redis.asyncio.Redis`",
    ),
    Rule(
        "SL505",
        "sqlalchemy-sync",
        "db",
        "A sync SQLAlchemy engine, connection or ORM session doing I/O (`execute`, "
        "`commit`, `flush`, `get`, `query(...).all()`, ...).",
        "db",
        _WRAP,
        "`sqlalchemy.ext.asyncio` (`AsyncSession`)",
    ),
    Rule(
        "SL506",
        "mongo-sync",
        "db",
        "A query of a sync pymongo client: a collection's `find_one`, `insert_one`, "
        "`update_many`, `aggregate`, ..., a database's `command`, a cursor's `next`/`to_list`.",
        "db",
        _WRAP,
        "`pymongo.AsyncMongoClient` or motor",
    ),
    # --- SL6xx sockets, DNS and protocol clients ------------------------------------------------
    Rule(
        "SL601",
        "socket-io",
        "net",
        "Blocking socket I/O: `socket.create_connection`, `select.select`, and `connect`/"
        "`accept`/`recv`/`send*` of a socket, unless the module makes that expression "
        "non-blocking (`setblocking(False)`, `settimeout(0)`) or the call sits in a `try` "
        "that handles `BlockingIOError`.",
        "net",
        _WRAP,
        "`asyncio.open_connection` or `loop.sock_*` methods",
    ),
    Rule(
        "SL602",
        "dns-lookup",
        "net",
        "A DNS lookup: `socket.getaddrinfo`, `gethostbyname`, `gethostbyaddr`, "
        "`getnameinfo`, `getfqdn`.",
        "dns",
        "await asyncio.get_running_loop().getaddrinfo({arglist})",
        "`loop.getaddrinfo` / `loop.getnameinfo`",
    ),
    Rule(
        "SL603",
        "protocol-client",
        "net",
        "A stdlib protocol client: `smtplib.SMTP(host)`, `ftplib.FTP(host)`, `imaplib`, "
        "`poplib`, `telnetlib`, and their methods.",
        "net",
        _WRAP,
        "aiosmtplib, aioftp, aioimaplib",
    ),
    Rule(
        "SL604",
        "ssh-sync",
        "net",
        "paramiko: `SSHClient.connect`/`exec_command`/`open_sftp`, `Transport(...)`, and "
        "every method of an SFTP client.",
        "ssh",
        _WRAP,
        "asyncssh",
    ),
    Rule(
        "SL605",
        "broker-sync",
        "net",
        "Sync message-broker clients: `pika.BlockingConnection` and its channels, "
        "kafka-python producers and consumers (`KafkaProducer(...)`, `send(...).get()`, "
        "`flush`, `poll`), paho-mqtt waits (`connect`, `loop_forever`, `loop`, "
        "`wait_for_publish`, `publish.single`).",
        "broker",
        _WRAP,
        "aio-pika, aiokafka, aiomqtt",
    ),
    # --- SL7xx waits on threads and processes ---------------------------------------------------
    Rule(
        "SL701",
        "lock-acquire",
        "wait",
        "`.acquire()` of a threading or multiprocessing lock, semaphore or condition "
        "(unless `blocking=False` or `timeout=0`), and `with lock:` on one.",
        "wait",
        _WRAP,
        "`asyncio.Lock` / `asyncio.Semaphore` for code on the loop",
    ),
    Rule(
        "SL702",
        "queue-get",
        "wait",
        "`.get()` (unless `block=False`) and `.join()` of a `queue` or `multiprocessing` queue.",
        "wait",
        _WRAP,
        "`asyncio.Queue`, or janus for a queue shared with threads",
    ),
    Rule(
        "SL703",
        "future-result",
        "wait",
        "Waiting for results of other threads or processes: `Future.result()`/`exception()` "
        "of a `concurrent.futures` future (also from `run_coroutine_threadsafe`), "
        "`concurrent.futures.wait`/`as_completed`, `Executor.shutdown()`, "
        "`Pool.apply`/`map`/`starmap`, `AsyncResult.get()`.",
        "wait",
        _WRAP,
        "`await asyncio.wrap_future(future)`",
    ),
    Rule(
        "SL704",
        "event-wait",
        "wait",
        "`.wait()` of a `threading`/`multiprocessing` event, condition or barrier (unless "
        "`timeout=0`).",
        "wait",
        _WRAP,
        "`asyncio.Event` for code on the loop",
    ),
    Rule(
        "SL705",
        "thread-join",
        "wait",
        "`.join()` of a thread, timer, process or pool (unless `timeout=0`).",
        "wait",
        _WRAP,
        "",
    ),
    # --- SL8xx devices -------------------------------------------------------------------------
    Rule(
        "SL801",
        "opencv-io",
        "devices",
        "OpenCV I/O: `cv2.imread`/`imwrite`/`imreadmulti`, opening a `cv2.VideoCapture` and "
        "its `read`/`grab`/`retrieve`/`open`, `VideoWriter.write`, `cv2.waitKey`.",
        "camera",
        _WRAP,
        "",
    ),
    Rule(
        "SL802",
        "serial-io",
        "devices",
        "pyserial: opening `serial.Serial(port)` and its `read`, `readline`, `read_until`, "
        "`write`, `flush`, ...",
        "serial",
        _WRAP,
        "pyserial-asyncio",
    ),
    Rule(
        "SL803",
        "i2c-io",
        "devices",
        "I2C / SMBus: opening `smbus.SMBus(bus)` / `smbus2.SMBus(bus)` and every transfer "
        "(`read_byte_data`, `write_i2c_block_data`, `i2c_rdwr`, ...).",
        "i2c",
        _WRAP,
        "",
    ),
    # --- SL9xx project-specific -----------------------------------------------------------------
    Rule(
        "SL900",
        "project-call",
        "project",
        "A call declared blocking in `[tool.steadyloop.audit.blocking]` of the audited "
        "project's pyproject.toml, with its domain.",
        None,
        _WRAP,
        "",
    ),
)

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}
PROJECT_RULE = "SL900"


class UnknownRule(ValueError):
    """A rule selector that matches no rule."""


_SELECTOR = re.compile(r"^SL\d{0,3}$")


def select_rules(
    select: Iterable[str] | None = None, ignore: Iterable[str] | None = None
) -> frozenset[str]:
    """The ids of the rules left after `select` (default: all) and then `ignore`.

    A selector is a rule id (`SL101`), a prefix (`SL1`, `SL30`: every rule that starts with
    it), a rule name (`requests-call`) or `ALL`. One that matches no rule raises `UnknownRule`.
    """
    chosen = set(RULES_BY_ID) if select is None else _expand(select)
    return frozenset(chosen - _expand(ignore or ()))


def _expand(selectors: Iterable[str]) -> set[str]:
    ids: set[str] = set()
    for raw in selectors:
        selector = raw.strip()
        if not selector:
            continue
        if selector.upper() == "ALL":
            ids.update(RULES_BY_ID)
            continue
        by_name = [rule.id for rule in RULES if rule.name == selector.lower()]
        upper = selector.upper()
        matched = by_name or (
            [rid for rid in RULES_BY_ID if rid.startswith(upper)] if _SELECTOR.match(upper) else []
        )
        if not matched:
            raise UnknownRule(
                f"unknown rule {selector!r}: use an id like SL101, a prefix like SL1, a name "
                "like requests-call, or ALL (the catalogue: "
                "https://steadyloop.readthedocs.io/en/latest/audit/#rules)"
            )
        ids.update(matched)
    return ids


# --- matching tables ----------------------------------------------------------------------------
def _false(keyword: str, position: int | None) -> NonBlocking:
    return NonBlocking(keyword, position, "false")


def _zero(keyword: str, position: int | None) -> NonBlocking:
    return NonBlocking(keyword, position, "zero")


def _all(
    rule: str,
    names: Iterable[str],
    *,
    fix: str | None = None,
    lazy: bool = False,
    nonblocking: tuple[NonBlocking, ...] = (),
    needs_args: bool = False,
) -> dict[str, Match]:
    match = Match(rule, fix=fix, lazy=lazy, nonblocking=nonblocking, needs_args=needs_args)
    return dict.fromkeys(names, match)


HTTP_VERBS = ("get", "post", "put", "patch", "delete", "head", "options", "request")
PATH_CLASSES = (
    "pathlib.Path",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib.PurePath",
    "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath",
)
_LAZY_FS_FIX = 'async for item in iterate_in_thread("fs", {call})'

FUNCTIONS: dict[str, Match] = {
    # SL101
    **_all("SL101", (f"requests.{verb}" for verb in HTTP_VERBS)),
    **_all("SL101", (f"requests.api.{verb}" for verb in HTTP_VERBS)),
    # SL103
    **_all(
        "SL103",
        (
            "urllib.request.urlopen",
            "urllib.request.urlretrieve",
            "urllib3.request",
            "urllib3.request_encode_url",
        ),
    ),
    # SL104 (`connect` and `trace` do not exist in httpx; ruff's ASYNC210 lists them)
    **_all(
        "SL104",
        (f"httpx.{verb}" for verb in (*HTTP_VERBS, "stream", "connect", "trace")),
    ),
    # SL106: creating clients reads credentials and service models from disk
    **_all("SL106", ("boto3.client", "boto3.resource")),
    # SL201, SL202
    "time.sleep": Match("SL201"),
    "builtins.input": Match("SL202"),
    "getpass.getpass": Match("SL202"),
    # SL301
    **_all(
        "SL301",
        (
            "builtins.open",
            "io.open",
            "io.open_code",
            "codecs.open",
            "gzip.open",
            "bz2.open",
            "lzma.open",
            "tarfile.open",
            "zipfile.ZipFile",
            "shelve.open",
            "dbm.open",
            "tempfile.NamedTemporaryFile",
            "tempfile.TemporaryFile",
            "tempfile.TemporaryDirectory",
            "tempfile.mkstemp",
            "tempfile.mkdtemp",
        ),
    ),
    # SL302: class methods
    **_all(
        "SL302",
        (f"{cls}.{method}" for cls in PATH_CLASSES[:3] for method in ("cwd", "home")),
    ),
    # SL303
    **_all(
        "SL303",
        (
            f"os.path.{name}"
            for name in (
                "exists",
                "lexists",
                "isfile",
                "isdir",
                "islink",
                "ismount",
                "isjunction",
                "getsize",
                "getmtime",
                "getatime",
                "getctime",
                "samefile",
                "sameopenfile",
                "realpath",
                "relpath",
                "abspath",
                "expanduser",
            )
        ),
    ),
    # SL304
    **_all(
        "SL304",
        (
            f"os.{name}"
            for name in (
                "listdir",
                "scandir",
                "stat",
                "lstat",
                "remove",
                "unlink",
                "rmdir",
                "removedirs",
                "mkdir",
                "makedirs",
                "rename",
                "renames",
                "replace",
                "chmod",
                "chown",
                "lchown",
                "utime",
                "link",
                "symlink",
                "readlink",
                "access",
                "truncate",
                "statvfs",
                "open",
                "fsync",
                "fdatasync",
                "mkfifo",
            )
        ),
    ),
    **_all("SL304", ("os.walk", "os.fwalk", "glob.iglob"), lazy=True, fix=_LAZY_FS_FIX),
    "glob.glob": Match("SL304"),
    # SL305
    **_all(
        "SL305",
        (
            f"shutil.{name}"
            for name in (
                "copy",
                "copy2",
                "copyfile",
                "copyfileobj",
                "copymode",
                "copystat",
                "copytree",
                "rmtree",
                "move",
                "make_archive",
                "unpack_archive",
                "disk_usage",
                "chown",
                "which",
            )
        ),
    ),
    # SL401, SL402, SL403 (os.spawn* is decided by its mode argument, see SPAWN)
    **_all(
        "SL401",
        (
            "subprocess.run",
            "subprocess.call",
            "subprocess.check_call",
            "subprocess.check_output",
            "subprocess.getoutput",
            "subprocess.getstatusoutput",
            "os.system",
            "os.posix_spawn",
            "os.posix_spawnp",
        ),
    ),
    **_all("SL402", ("subprocess.Popen", "os.popen")),
    **_all("SL403", ("os.wait", "os.wait3", "os.wait4", "os.waitid")),
    "os.waitpid": Match("SL403", nonblocking=(NonBlocking("options", 1, "wnohang"),)),
    # SL501-SL503: connecting
    "sqlite3.connect": Match("SL501"),
    **_all(
        "SL502",
        ("psycopg2.connect", "psycopg.connect", "psycopg.Connection.connect"),
    ),
    **_all(
        "SL503",
        (
            "pymysql.connect",
            "pymysql.Connect",
            "pymysql.connections.Connection",
            "MySQLdb.connect",
            "MySQLdb.Connect",
            "mysql.connector.connect",
            "pyodbc.connect",
            "oracledb.connect",
            "cx_Oracle.connect",
            "pymssql.connect",
        ),
    ),
    # SL601, SL602
    **_all("SL601", ("socket.create_connection", "select.select")),
    **_all(
        "SL602",
        (
            "socket.getaddrinfo",
            "socket.gethostbyname",
            "socket.gethostbyname_ex",
            "socket.gethostbyaddr",
            "socket.getnameinfo",
            "socket.getfqdn",
        ),
    ),
    # SL603: these connect when given a host
    **_all(
        "SL603",
        (
            "smtplib.SMTP",
            "smtplib.SMTP_SSL",
            "smtplib.LMTP",
            "ftplib.FTP",
            "ftplib.FTP_TLS",
            "imaplib.IMAP4",
            "imaplib.IMAP4_SSL",
            "poplib.POP3",
            "poplib.POP3_SSL",
            "telnetlib.Telnet",
            "nntplib.NNTP",
        ),
        needs_args=True,
    ),
    # SL703
    "concurrent.futures.wait": Match("SL703"),
    "concurrent.futures.as_completed": Match("SL703", lazy=True),
}

#: `os.spawn*`: SL401 with P_WAIT (or no mode), SL402 otherwise.
SPAWN = frozenset(
    f"os.{name}"
    for name in (
        "spawnl",
        "spawnle",
        "spawnlp",
        "spawnlpe",
        "spawnv",
        "spawnve",
        "spawnvp",
        "spawnvpe",
    )
)

#: Functions that run their callable argument off the loop (in a thread or process). A call
#: passed to them is still evaluated on the loop, but a lazy iterator (`os.walk(root)`) is fine.
OFFLOADERS = frozenset(
    {
        "steadyloop.run_blocking",
        "steadyloop.offload.run_blocking",
        "steadyloop.iterate_in_thread",
        "steadyloop.offload.iterate_in_thread",
        "steadyloop.run_cpu",
        "steadyloop.offload.run_cpu",
        "asyncio.to_thread",
        "anyio.to_thread.run_sync",
        "trio.to_thread.run_sync",
        "starlette.concurrency.run_in_threadpool",
        "starlette.concurrency.iterate_in_threadpool",
        "fastapi.concurrency.run_in_threadpool",
        "fastapi.concurrency.iterate_in_threadpool",
    }
)
#: The same, recognised by method name on any receiver (`loop.run_in_executor`, `rt.run_blocking`).
OFFLOADER_METHODS = frozenset(
    {
        "run_in_executor",
        "run_blocking",
        "iterate_in_thread",
        "run_in_threadpool",
        "iterate_in_threadpool",
        "to_thread",
        "run_sync",
    }
)
#: Functions that take a coroutine: a call passed to them is a coroutine, not a blocking call.
COROUTINE_CONSUMERS = frozenset(
    {
        "asyncio.wait_for",
        "asyncio.gather",
        "asyncio.shield",
        "asyncio.create_task",
        "asyncio.ensure_future",
        "asyncio.run_coroutine_threadsafe",
        "asyncio.wait",
        "asyncio.as_completed",
    }
)
COROUTINE_CONSUMER_METHODS = frozenset(
    {"create_task", "ensure_future", "start_soon", "gather", "wait_for", "shield"}
)

# --- types ---------------------------------------------------------------------------------------
PATH = "pathlib.Path"

#: Classes: calling one makes a value of the type, and annotating with one declares it.
CLASSES: dict[str, str] = {
    **dict.fromkeys(PATH_CLASSES, PATH),
    **dict.fromkeys(
        ("requests.Session", "requests.sessions.Session"),
        "requests.Session",
    ),
    "httpx.Client": "httpx.Client",
    **dict.fromkeys(
        (
            "urllib3.PoolManager",
            "urllib3.ProxyManager",
            "urllib3.HTTPConnectionPool",
            "urllib3.HTTPSConnectionPool",
            "urllib3.poolmanager.PoolManager",
            "urllib3.connectionpool.HTTPConnectionPool",
            "urllib3.connectionpool.HTTPSConnectionPool",
        ),
        "urllib3.Pool",
    ),
    **dict.fromkeys(
        ("http.client.HTTPConnection", "http.client.HTTPSConnection"),
        "http.client.HTTPConnection",
    ),
    **dict.fromkeys(
        (
            "googleapiclient.discovery.Resource",
            "googleapiclient.http.HttpRequest",
            "googleapiclient.http.BatchHttpRequest",
        ),
        "googleapiclient.Resource",
    ),
    **dict.fromkeys(
        ("googleapiclient.http.MediaIoBaseDownload", "apiclient.http.MediaIoBaseDownload"),
        "googleapiclient.Download",
    ),
    **dict.fromkeys(("boto3.Session", "boto3.session.Session"), "boto3.Session"),
    "sqlite3.Connection": "sqlite3.Connection",
    "sqlite3.Cursor": "sqlite3.Cursor",
    **dict.fromkeys(
        ("psycopg.Connection", "psycopg2.extensions.connection"), "postgres.Connection"
    ),
    **dict.fromkeys(("psycopg.Cursor", "psycopg2.extensions.cursor"), "postgres.Cursor"),
    **dict.fromkeys(
        (
            "psycopg2.pool.SimpleConnectionPool",
            "psycopg2.pool.ThreadedConnectionPool",
            "psycopg_pool.ConnectionPool",
        ),
        "postgres.Pool",
    ),
    **dict.fromkeys(
        (
            "redis.Redis",
            "redis.StrictRedis",
            "redis.client.Redis",
            "redis.client.StrictRedis",
            "redis.RedisCluster",
            "redis.cluster.RedisCluster",
        ),
        "redis.Redis",
    ),
    **dict.fromkeys(("sqlalchemy.Engine", "sqlalchemy.engine.Engine"), "sqlalchemy.Engine"),
    **dict.fromkeys(
        ("sqlalchemy.Connection", "sqlalchemy.engine.Connection"), "sqlalchemy.Connection"
    ),
    **dict.fromkeys(
        (
            "sqlalchemy.orm.Session",
            "sqlalchemy.orm.session.Session",
            "sqlalchemy.orm.scoped_session",
            "sqlmodel.Session",
        ),
        "sqlalchemy.Session",
    ),
    **dict.fromkeys(
        ("sqlalchemy.orm.sessionmaker", "sqlalchemy.orm.session.sessionmaker"),
        "sqlalchemy.sessionmaker",
    ),
    **dict.fromkeys(("sqlalchemy.orm.Query", "sqlalchemy.orm.query.Query"), "sqlalchemy.Query"),
    "socket.socket": "socket.socket",
    **dict.fromkeys(
        (
            "smtplib.SMTP",
            "smtplib.SMTP_SSL",
            "smtplib.LMTP",
            "ftplib.FTP",
            "ftplib.FTP_TLS",
            "imaplib.IMAP4",
            "imaplib.IMAP4_SSL",
            "poplib.POP3",
            "poplib.POP3_SSL",
            "telnetlib.Telnet",
            "nntplib.NNTP",
        ),
        "protocol.Client",
    ),
    **dict.fromkeys(
        (
            "threading.Lock",
            "threading.RLock",
            "threading.Semaphore",
            "threading.BoundedSemaphore",
            "multiprocessing.Lock",
            "multiprocessing.RLock",
            "multiprocessing.Semaphore",
            "multiprocessing.BoundedSemaphore",
            "multiprocessing.synchronize.Lock",
            "multiprocessing.synchronize.RLock",
            "multiprocessing.synchronize.Semaphore",
            "_thread.allocate_lock",
            "_thread.LockType",
        ),
        "threading.Lock",
    ),
    **dict.fromkeys(("threading.Condition", "multiprocessing.Condition"), "threading.Condition"),
    **dict.fromkeys(
        ("threading.Event", "multiprocessing.Event", "multiprocessing.synchronize.Event"),
        "threading.Event",
    ),
    **dict.fromkeys(("threading.Barrier", "multiprocessing.Barrier"), "threading.Barrier"),
    **dict.fromkeys(
        (
            "queue.Queue",
            "queue.LifoQueue",
            "queue.PriorityQueue",
            "queue.SimpleQueue",
            "multiprocessing.Queue",
            "multiprocessing.JoinableQueue",
            "multiprocessing.SimpleQueue",
            "multiprocessing.queues.Queue",
        ),
        "queue.Queue",
    ),
    **dict.fromkeys(
        (
            "concurrent.futures.ThreadPoolExecutor",
            "concurrent.futures.ProcessPoolExecutor",
            "concurrent.futures.Executor",
            "concurrent.futures.thread.ThreadPoolExecutor",
            "concurrent.futures.process.ProcessPoolExecutor",
        ),
        "concurrent.futures.Executor",
    ),
    **dict.fromkeys(
        ("concurrent.futures.Future", "concurrent.futures._base.Future"),
        "concurrent.futures.Future",
    ),
    **dict.fromkeys(
        (
            "multiprocessing.Pool",
            "multiprocessing.pool.Pool",
            "multiprocessing.pool.ThreadPool",
        ),
        "multiprocessing.Pool",
    ),
    "multiprocessing.pool.AsyncResult": "multiprocessing.AsyncResult",
    **dict.fromkeys(
        ("threading.Thread", "threading.Timer", "multiprocessing.Process"), "threading.Thread"
    ),
    "subprocess.Popen": "subprocess.Popen",
}

#: Functions (not classes) whose result has a known type.
FACTORIES: dict[str, str] = {
    "requests.session": "requests.Session",
    "requests.sessions.session": "requests.Session",
    "urllib3.connection_from_url": "urllib3.Pool",
    "urllib3.proxy_from_url": "urllib3.Pool",
    "urllib.request.build_opener": "urllib.Opener",
    "googleapiclient.discovery.build": "googleapiclient.Resource",
    "googleapiclient.discovery.build_from_document": "googleapiclient.Resource",
    "apiclient.discovery.build": "googleapiclient.Resource",
    "boto3.client": "boto3.Client",
    "boto3.resource": "boto3.Resource",
    "botocore.session.get_session": "boto3.Session",
    "sqlite3.connect": "sqlite3.Connection",
    "psycopg2.connect": "postgres.Connection",
    "psycopg.connect": "postgres.Connection",
    "psycopg.Connection.connect": "postgres.Connection",
    **dict.fromkeys(
        (
            "pymysql.connect",
            "pymysql.Connect",
            "pymysql.connections.Connection",
            "MySQLdb.connect",
            "MySQLdb.Connect",
            "mysql.connector.connect",
            "pyodbc.connect",
            "oracledb.connect",
            "cx_Oracle.connect",
            "pymssql.connect",
        ),
        "dbapi.Connection",
    ),
    **dict.fromkeys(
        (
            "redis.from_url",
            "redis.Redis.from_url",
            "redis.StrictRedis.from_url",
            "redis.client.Redis.from_url",
        ),
        "redis.Redis",
    ),
    "sqlalchemy.create_engine": "sqlalchemy.Engine",
    "sqlalchemy.engine.create_engine": "sqlalchemy.Engine",
    "socket.create_connection": "socket.socket",
    "ssl.wrap_socket": "socket.socket",
    "ssl.create_default_context": "ssl.SSLContext",
    "ssl.SSLContext": "ssl.SSLContext",
    "asyncio.run_coroutine_threadsafe": "concurrent.futures.Future",
    **{f"{cls}.{name}": PATH for cls in PATH_CLASSES[:3] for name in ("cwd", "home")},
}

#: Annotation-only names (not worth calling, but common in signatures).
ANNOTATIONS: dict[str, str] = {
    "sqlite3.Connection": "sqlite3.Connection",
    "ssl.SSLSocket": "socket.socket",
    "multiprocessing.pool.AsyncResult": "multiprocessing.AsyncResult",
}

_DBAPI_CONNECTION = (
    "execute",
    "executemany",
    "executescript",
    "commit",
    "rollback",
    "callproc",
)
_DBAPI_CURSOR = (
    "execute",
    "executemany",
    "executescript",
    "callproc",
    "fetchone",
    "fetchmany",
    "fetchall",
    "nextset",
    "scroll",
)
_SOCKET_IO = (
    "accept",
    "connect",
    "connect_ex",
    "recv",
    "recv_into",
    "recvfrom",
    "recvfrom_into",
    "recvmsg",
    "recvmsg_into",
    "send",
    "sendall",
    "sendto",
    "sendmsg",
    "sendfile",
)
_PATH_IO = (
    "absolute",
    "abspath",
    "chmod",
    "copy",
    "copy_into",
    "cwd",
    "exists",
    "expanduser",
    "group",
    "hardlink_to",
    "home",
    "is_block_device",
    "is_char_device",
    "is_dir",
    "is_fifo",
    "is_file",
    "is_junction",
    "is_mount",
    "is_socket",
    "is_symlink",
    "isjunction",
    "lchmod",
    "link_to",
    "lstat",
    "mkdir",
    "move",
    "move_into",
    "owner",
    "read_bytes",
    "read_text",
    "readlink",
    "rename",
    "replace",
    "resolve",
    "rmdir",
    "samefile",
    "stat",
    "symlink_to",
    "touch",
    "unlink",
    "write_bytes",
    "write_text",
)
_TIMEOUT0 = (_zero("timeout", 0),)

METHODS: dict[str, MethodTable] = {
    "requests.Session": MethodTable(_all("SL102", (*HTTP_VERBS, "send"))),
    "httpx.Client": MethodTable(
        _all(
            "SL104",
            (
                "close",
                "delete",
                "get",
                "head",
                "options",
                "patch",
                "post",
                "put",
                "request",
                "send",
                "stream",
            ),
        )
    ),
    "urllib3.Pool": MethodTable(
        _all("SL103", ("request", "urlopen", "request_encode_url", "request_encode_body"))
    ),
    "http.client.HTTPConnection": MethodTable(
        _all("SL103", ("request", "getresponse", "connect", "send", "endheaders"))
    ),
    "urllib.Opener": MethodTable({"open": Match("SL103")}),
    "googleapiclient.Resource": MethodTable(_all("SL105", ("execute", "next_chunk"))),
    "googleapiclient.Download": MethodTable({"next_chunk": Match("SL105")}),
    "boto3.Session": MethodTable(_all("SL106", ("client", "resource", "create_client"))),
    "boto3.Client": MethodTable(
        {},
        wildcard=Match("SL106"),
        except_=frozenset(
            {
                "generate_presigned_url",
                "generate_presigned_post",
                "get_paginator",
                "get_waiter",
                "can_paginate",
                "close",
            }
        ),
    ),
    "boto3.Waiter": MethodTable({"wait": Match("SL106")}),
    "boto3.Resource": MethodTable(
        {},
        wildcard=Match("SL106"),
        except_=frozenset({"get_available_subresources"}),
        except_capitalized=True,
    ),
    PATH: MethodTable(
        {
            **_all("SL302", (*_PATH_IO, "iterdir")),
            **_all(
                "SL302",
                ("glob", "rglob", "walk"),
                lazy=True,
                fix=_LAZY_FS_FIX,
            ),
            "open": Match("SL301"),
        }
    ),
    "sqlite3.Connection": MethodTable(
        _all("SL501", (*_DBAPI_CONNECTION, "backup", "iterdump", "blobopen", "serialize"))
    ),
    "sqlite3.Cursor": MethodTable(_all("SL501", _DBAPI_CURSOR)),
    "postgres.Connection": MethodTable(_all("SL502", _DBAPI_CONNECTION)),
    "postgres.Cursor": MethodTable(
        _all("SL502", (*_DBAPI_CURSOR, "copy_expert", "copy_from", "copy_to", "copy"))
    ),
    "postgres.Pool": MethodTable(_all("SL502", ("getconn", "connection", "wait"))),
    "dbapi.Connection": MethodTable(_all("SL503", _DBAPI_CONNECTION)),
    "dbapi.Cursor": MethodTable(_all("SL503", _DBAPI_CURSOR)),
    "redis.Redis": MethodTable(
        {},
        wildcard=Match("SL504"),
        except_=frozenset(
            {
                "pipeline",
                "pubsub",
                "lock",
                "register_script",
                "get_encoder",
                "get_connection_kwargs",
                "set_response_callback",
                "get_retry",
                "set_retry",
                "close",
            }
        ),
    ),
    "redis.Pipeline": MethodTable(_all("SL504", ("execute", "watch"))),
    "redis.PubSub": MethodTable(
        _all("SL504", ("subscribe", "psubscribe", "unsubscribe", "get_message", "ping"))
    ),
    "redis.Lock": MethodTable(
        _all("SL504", ("acquire", "release", "extend", "reacquire", "locked", "owned"))
    ),
    "sqlalchemy.Engine": MethodTable(
        _all("SL505", ("connect", "begin", "execute", "raw_connection"))
    ),
    "sqlalchemy.Connection": MethodTable(
        _all("SL505", ("execute", "exec_driver_sql", "commit", "rollback", "scalar", "scalars"))
    ),
    "sqlalchemy.Session": MethodTable(
        _all(
            "SL505",
            (
                "execute",
                "exec",
                "scalar",
                "scalars",
                "get",
                "commit",
                "rollback",
                "flush",
                "refresh",
                "merge",
                "connection",
                "bulk_save_objects",
                "bulk_insert_mappings",
                "bulk_update_mappings",
            ),
        )
    ),
    "sqlalchemy.Query": MethodTable(
        _all(
            "SL505",
            ("all", "first", "one", "one_or_none", "scalar", "count", "get", "delete", "update"),
        )
    ),
    "socket.socket": MethodTable(_all("SL601", _SOCKET_IO)),
    "protocol.Client": MethodTable(
        {},
        wildcard=Match("SL603"),
        except_=frozenset({"set_debuglevel", "getwelcome", "set_pasv"}),
    ),
    "threading.Lock": MethodTable(
        {"acquire": Match("SL701", nonblocking=(_false("blocking", 0), _zero("timeout", 1)))}
    ),
    "threading.Condition": MethodTable(
        {
            "acquire": Match("SL701", nonblocking=(_false("blocking", 0), _zero("timeout", 1))),
            "wait": Match("SL704", nonblocking=_TIMEOUT0),
            "wait_for": Match("SL704", nonblocking=(_zero("timeout", 1),)),
        }
    ),
    "threading.Event": MethodTable({"wait": Match("SL704", nonblocking=_TIMEOUT0)}),
    "threading.Barrier": MethodTable({"wait": Match("SL704", nonblocking=_TIMEOUT0)}),
    "queue.Queue": MethodTable(
        {
            "get": Match("SL702", nonblocking=(_false("block", 0),)),
            "join": Match("SL702"),
        }
    ),
    "concurrent.futures.Future": MethodTable(
        {
            "result": Match(
                "SL703", nonblocking=_TIMEOUT0, fix="await asyncio.wrap_future({receiver})"
            ),
            "exception": Match("SL703", nonblocking=_TIMEOUT0),
        }
    ),
    "concurrent.futures.Executor": MethodTable(
        {"shutdown": Match("SL703", nonblocking=(_false("wait", 0),))}
    ),
    "multiprocessing.Pool": MethodTable(
        {
            **_all("SL703", ("apply", "map", "starmap")),
            "join": Match("SL705"),
        }
    ),
    "multiprocessing.AsyncResult": MethodTable(
        _all("SL703", ("get", "wait"), nonblocking=_TIMEOUT0)
    ),
    "threading.Thread": MethodTable({"join": Match("SL705", nonblocking=_TIMEOUT0)}),
    "subprocess.Popen": MethodTable(
        {
            "wait": Match("SL403", nonblocking=_TIMEOUT0),
            "communicate": Match("SL403"),
        }
    ),
}

#: (type, method) -> the type of what the method returns.
RETURNS: dict[tuple[str, str], str] = {
    **{
        (PATH, name): PATH
        for name in (
            "joinpath",
            "with_name",
            "with_suffix",
            "with_stem",
            "with_segments",
            "relative_to",
            "absolute",
            "resolve",
            "expanduser",
            "readlink",
            "rename",
            "replace",
            "cwd",
            "home",
        )
    },
    ("urllib3.Pool", "connection_from_url"): "urllib3.Pool",
    ("boto3.Session", "client"): "boto3.Client",
    ("boto3.Session", "create_client"): "boto3.Client",
    ("boto3.Session", "resource"): "boto3.Resource",
    ("boto3.Client", "get_waiter"): "boto3.Waiter",
    ("sqlite3.Connection", "cursor"): "sqlite3.Cursor",
    ("sqlite3.Connection", "execute"): "sqlite3.Cursor",
    ("sqlite3.Connection", "executemany"): "sqlite3.Cursor",
    ("sqlite3.Connection", "executescript"): "sqlite3.Cursor",
    ("postgres.Connection", "cursor"): "postgres.Cursor",
    ("postgres.Connection", "execute"): "postgres.Cursor",
    ("postgres.Pool", "getconn"): "postgres.Connection",
    ("postgres.Pool", "connection"): "postgres.Connection",
    ("dbapi.Connection", "cursor"): "dbapi.Cursor",
    ("redis.Redis", "pipeline"): "redis.Pipeline",
    ("redis.Redis", "pubsub"): "redis.PubSub",
    ("redis.Redis", "lock"): "redis.Lock",
    ("sqlalchemy.Engine", "connect"): "sqlalchemy.Connection",
    ("sqlalchemy.Engine", "begin"): "sqlalchemy.Connection",
    ("sqlalchemy.sessionmaker", "__call__"): "sqlalchemy.Session",
    ("sqlalchemy.sessionmaker", "begin"): "sqlalchemy.Session",
    ("sqlalchemy.Session", "connection"): "sqlalchemy.Connection",
    ("sqlalchemy.Session", "query"): "sqlalchemy.Query",
    **{
        ("sqlalchemy.Query", name): "sqlalchemy.Query"
        for name in (
            "filter",
            "filter_by",
            "join",
            "outerjoin",
            "order_by",
            "group_by",
            "having",
            "limit",
            "offset",
            "options",
            "where",
            "distinct",
            "with_entities",
            "select_from",
            "execution_options",
            "yield_per",
        )
    },
    ("ssl.SSLContext", "wrap_socket"): "socket.socket",
    ("concurrent.futures.Executor", "submit"): "concurrent.futures.Future",
    ("multiprocessing.Pool", "apply_async"): "multiprocessing.AsyncResult",
    ("multiprocessing.Pool", "map_async"): "multiprocessing.AsyncResult",
    ("multiprocessing.Pool", "starmap_async"): "multiprocessing.AsyncResult",
}

#: Types whose every method call returns the same type (request builders).
CHAINABLE = frozenset({"googleapiclient.Resource"})
#: Types whose capitalised methods build sub-objects of the same type (`s3.Bucket(name)`).
CAPITALIZED_CHAINABLE = frozenset({"boto3.Resource"})

#: (type, attribute) -> the attribute's type.
ATTRIBUTES: dict[tuple[str, str], str] = {
    (PATH, "parent"): PATH,
}

#: (type, method) -> the type of the items the method's result iterates over.
ELEMENTS: dict[tuple[str, str], str] = {
    (PATH, "iterdir"): PATH,
    (PATH, "glob"): PATH,
    (PATH, "rglob"): PATH,
}

#: Types whose `with X as name` binds something other than X itself (None: unknown).
ENTERS: dict[str, str | None] = {
    "concurrent.futures.Future": None,
    "threading.Lock": None,
    "threading.Condition": None,
    "sqlalchemy.Engine": None,
    "redis.Lock": None,
}

# --- open file objects (SL306) -------------------------------------------------------------------
FILE = "io.File"
#: Methods of a file object that do no I/O.
_FILE_NO_IO = frozenset({"fileno", "isatty", "readable", "writable", "seekable", "detach"})
FUNCTIONS["os.fdopen"] = Match("SL301")
CLASSES.update(
    dict.fromkeys(
        (
            "io.TextIOWrapper",
            "io.BufferedReader",
            "io.BufferedWriter",
            "io.BufferedRandom",
            "io.BufferedRWPair",
            "io.FileIO",
            "_io.TextIOWrapper",
            "_io.BufferedReader",
            "_io.BufferedWriter",
            "_io.BufferedRandom",
            "_io.FileIO",
        ),
        FILE,
    )
)
ANNOTATIONS.update(
    dict.fromkeys(
        ("typing.IO", "typing.TextIO", "typing.BinaryIO", "typing_extensions.IO"),
        FILE,
    )
)
FACTORIES.update(
    dict.fromkeys(
        (
            "builtins.open",
            "io.open",
            "io.open_code",
            "os.fdopen",
            "codecs.open",
            "gzip.open",
            "bz2.open",
            "lzma.open",
            "gzip.GzipFile",
            "bz2.BZ2File",
            "lzma.LZMAFile",
            "tempfile.TemporaryFile",
            "tempfile.NamedTemporaryFile",
        ),
        FILE,
    )
)
METHODS[FILE] = MethodTable({}, wildcard=Match("SL306"), except_=_FILE_NO_IO)
RETURNS[(PATH, "open")] = FILE

# --- third-party clients -------------------------------------------------------------------------
# urllib3 pools: every method but the pure bookkeeping ones sends a request.
METHODS["urllib3.Pool"] = MethodTable(
    {},
    wildcard=Match("SL103"),
    except_=frozenset(
        {
            "clear",
            "connection_from_host",
            "connection_from_context",
            "connection_from_pool_key",
            "connection_from_url",
        }
    ),
)
CLASSES.update(
    dict.fromkeys(
        (
            "urllib3.connectionpool.ConnectionPool",
            "urllib3.poolmanager.ProxyManager",
            "urllib3.request.RequestMethods",
            "urllib3._request_methods.RequestMethods",
        ),
        "urllib3.Pool",
    )
)
RETURNS[("urllib3.Pool", "connection_from_host")] = "urllib3.Pool"

# OpenCV (SL801)
FUNCTIONS.update(_all("SL801", ("cv2.imread", "cv2.imwrite", "cv2.imreadmulti", "cv2.waitKey")))
# A capture or writer opens its device or file only when given one.
FUNCTIONS.update(_all("SL801", ("cv2.VideoCapture", "cv2.VideoWriter"), needs_args=True))
CLASSES.update({"cv2.VideoCapture": "cv2.VideoCapture", "cv2.VideoWriter": "cv2.VideoWriter"})
METHODS["cv2.VideoCapture"] = MethodTable(_all("SL801", ("read", "grab", "retrieve", "open")))
METHODS["cv2.VideoWriter"] = MethodTable(_all("SL801", ("write", "open")))

# pyserial (SL802): the constructor opens the port when given one.
FUNCTIONS.update(_all("SL802", ("serial.Serial", "serial.serial_for_url"), needs_args=True))
CLASSES.update(dict.fromkeys(("serial.Serial", "serial.serialposix.Serial"), "serial.Serial"))
FACTORIES["serial.serial_for_url"] = "serial.Serial"
METHODS["serial.Serial"] = MethodTable(
    _all(
        "SL802",
        (
            "open",
            "read",
            "read_all",
            "read_until",
            "readline",
            "readlines",
            "write",
            "writelines",
            "flush",
            "send_break",
            "reset_input_buffer",
            "reset_output_buffer",
        ),
    )
)

# smbus / smbus2 (SL803): the constructor opens /dev/i2c-N when given a bus.
FUNCTIONS.update(_all("SL803", ("smbus.SMBus", "smbus2.SMBus"), needs_args=True))
CLASSES.update(dict.fromkeys(("smbus.SMBus", "smbus2.SMBus"), "smbus.SMBus"))
METHODS["smbus.SMBus"] = MethodTable({}, wildcard=Match("SL803"), except_=frozenset({"close"}))

# pymongo (SL506): clients connect in the background; queries block.
CLASSES.update(
    dict.fromkeys(("pymongo.MongoClient", "pymongo.mongo_client.MongoClient"), "mongo.Client")
)
CLASSES.update(
    {
        "pymongo.database.Database": "mongo.Database",
        "pymongo.collection.Collection": "mongo.Collection",
        "pymongo.cursor.Cursor": "mongo.Cursor",
    }
)
METHODS["mongo.Client"] = MethodTable(
    _all("SL506", ("list_database_names", "list_databases", "server_info", "drop_database"))
)
METHODS["mongo.Database"] = MethodTable(
    _all(
        "SL506",
        (
            "command",
            "list_collection_names",
            "list_collections",
            "create_collection",
            "drop_collection",
            "validate_collection",
        ),
    )
)
METHODS["mongo.Collection"] = MethodTable(
    {},
    wildcard=Match("SL506"),
    except_=frozenset({"find", "find_raw_batches", "with_options", "get_collection", "watch"}),
)
METHODS["mongo.Cursor"] = MethodTable(_all("SL506", ("next", "to_list", "explain", "distinct")))
RETURNS.update(
    {
        ("mongo.Client", "get_database"): "mongo.Database",
        ("mongo.Client", "get_default_database"): "mongo.Database",
        ("mongo.Database", "get_collection"): "mongo.Collection",
        ("mongo.Collection", "find"): "mongo.Cursor",
        **{
            ("mongo.Cursor", name): "mongo.Cursor"
            for name in ("sort", "limit", "skip", "batch_size", "hint", "where", "max_time_ms")
        },
    }
)

# paramiko (SL604)
FUNCTIONS["paramiko.Transport"] = Match("SL604", needs_args=True)
CLASSES.update(
    {
        "paramiko.SSHClient": "paramiko.SSHClient",
        "paramiko.client.SSHClient": "paramiko.SSHClient",
        "paramiko.SFTPClient": "paramiko.SFTP",
        "paramiko.sftp_client.SFTPClient": "paramiko.SFTP",
        "paramiko.Transport": "paramiko.Transport",
    }
)
FACTORIES["paramiko.SFTPClient.from_transport"] = "paramiko.SFTP"
METHODS["paramiko.SSHClient"] = MethodTable(
    _all("SL604", ("connect", "exec_command", "open_sftp", "invoke_shell", "close"))
)
METHODS["paramiko.Transport"] = MethodTable(
    _all("SL604", ("connect", "open_session", "open_channel", "auth_password", "auth_publickey"))
)
METHODS["paramiko.SFTP"] = MethodTable({}, wildcard=Match("SL604"))
RETURNS[("paramiko.SSHClient", "open_sftp")] = "paramiko.SFTP"

# pika, kafka-python, paho-mqtt (SL605)
FUNCTIONS.update(
    _all(
        "SL605",
        (
            "pika.BlockingConnection",
            "pika.adapters.blocking_connection.BlockingConnection",
            "kafka.KafkaProducer",
            "kafka.KafkaConsumer",
            "paho.mqtt.publish.single",
            "paho.mqtt.publish.multiple",
            "paho.mqtt.subscribe.simple",
            "paho.mqtt.subscribe.callback",
        ),
    )
)
CLASSES.update(
    {
        "pika.BlockingConnection": "pika.Connection",
        "pika.adapters.blocking_connection.BlockingConnection": "pika.Connection",
        "pika.adapters.blocking_connection.BlockingChannel": "pika.Channel",
        "kafka.KafkaProducer": "kafka.Producer",
        "kafka.KafkaConsumer": "kafka.Consumer",
        "paho.mqtt.client.Client": "mqtt.Client",
        "paho.mqtt.client.MQTTMessageInfo": "mqtt.MessageInfo",
    }
)
METHODS["pika.Connection"] = MethodTable(
    _all("SL605", ("channel", "close", "process_data_events", "sleep"))
)
METHODS["pika.Channel"] = MethodTable(
    {},
    wildcard=Match("SL605"),
    except_=frozenset({"add_on_cancel_callback", "add_on_return_callback", "add_callback"}),
)
METHODS["kafka.Producer"] = MethodTable(_all("SL605", ("send", "flush", "close", "partitions_for")))
METHODS["kafka.Future"] = MethodTable({"get": Match("SL605", nonblocking=_TIMEOUT0)})
METHODS["kafka.Consumer"] = MethodTable(
    _all(
        "SL605",
        (
            "poll",
            "commit",
            "committed",
            "position",
            "end_offsets",
            "beginning_offsets",
            "offsets_for_times",
            "topics",
            "partitions_for_topic",
            "close",
        ),
    )
)
METHODS["mqtt.Client"] = MethodTable(
    _all("SL605", ("connect", "reconnect", "loop_forever", "loop", "connect_srv"))
)
METHODS["mqtt.MessageInfo"] = MethodTable({"wait_for_publish": Match("SL605")})
RETURNS.update(
    {
        ("pika.Connection", "channel"): "pika.Channel",
        ("kafka.Producer", "send"): "kafka.Future",
        ("mqtt.Client", "publish"): "mqtt.MessageInfo",
    }
)

#: (type, attribute) for any attribute name: `client.db` is a database, `db.users` a collection.
ANY_ATTRIBUTE: dict[str, str] = {
    "mongo.Client": "mongo.Database",
    "mongo.Database": "mongo.Collection",
}
#: Types whose subscript has a known type: `client["db"]`, `db["users"]`.
SUBSCRIPTS: dict[str, str] = dict(ANY_ATTRIBUTE)


# --- module aliases ------------------------------------------------------------------------------
#: Forks that keep the original's API under another module name.
MODULE_ALIASES = {"httpx": ("httpx2",)}


def _alias_tables() -> None:
    tables: tuple[dict[str, object], ...] = (FUNCTIONS, CLASSES, FACTORIES, ANNOTATIONS)  # type: ignore[assignment]
    for table in tables:
        for key in [k for k in table if k.partition(".")[0] in MODULE_ALIASES]:
            module, _, rest = key.partition(".")
            for alias in MODULE_ALIASES[module]:
                table.setdefault(f"{alias}.{rest}", table[key])


_alias_tables()

#: Every module whose names the catalogue knows (for `--loose`: a name used without an import).
KNOWN_MODULES = frozenset(
    key.partition(".")[0]
    for key in (*FUNCTIONS, *CLASSES, *FACTORIES)
    if not key.startswith("builtins.")
)
