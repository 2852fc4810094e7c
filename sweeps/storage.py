"""Where sweeps live: a local folder or a URI of shared storage (s3://, gs://, an NFS path), through pyarrow's
file systems. Files are written whole under a temporary name, then renamed: a crash or a full disk never
leaves half a Parquet file where a reader would take it for the real one. Ray Tune writes a local sweep's files the
same way (`for_ray`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
import time
import uuid

import fsspec.implementations.local
import pandas as pd
import pyarrow
import pyarrow.fs

from sweeps.errors import first_line


def is_local(location: str) -> bool:
    """A path on this machine's file system (or a mount), not a URI of shared storage."""
    return "://" not in location


def _split_query(location: str) -> tuple[str, str]:
    """A URI's options (`s3://bucket/sweeps?endpoint_override=host:port&scheme=http`) apply to its whole file system:
    paths are joined before them."""
    if not is_local(location) and "?" in location:
        path, query = location.split("?", 1)
        return path, f"?{query}"
    return location, ""


def join(base: str, *parts: str) -> str:
    path, query = _split_query(base)
    return "/".join([path.rstrip("/"), *parts]) + query


def parent_and_name(location: str) -> tuple[str, str]:
    path, query = _split_query(location)
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent + query, name


def uri_for(location: str, fs_path: str) -> str:
    """A path of `location`'s file system (as Ray and pyarrow give them: no scheme) as a location of its own."""
    if is_local(location):
        return fs_path
    scheme = location.split("://", 1)[0]
    return f"{scheme}://{fs_path.lstrip('/') if scheme != 'file' else fs_path}{_split_query(location)[1]}"


def stamped(prefix: str) -> str:
    """A new folder's default name: `prefix` and the time, to the second."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def names(location: str) -> list[str]:
    """The names of what a folder holds (none where it is missing)."""
    fs, path = _fs(location)
    return sorted(info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True)))


def absolute(path_or_uri: str) -> str:
    """A URI stays as it is; a local path becomes absolute (Ray Tune wants absolute storage paths)."""
    return os.path.abspath(os.path.expanduser(path_or_uri)) if is_local(path_or_uri) else path_or_uri


class StorageError(ValueError):
    """A location pyarrow cannot use (an unknown scheme, a bad option in the URI): bad input, not a failing disk."""


def _fs(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    try:
        return pyarrow.fs.FileSystem.from_uri(absolute(location))
    except (ValueError, NotImplementedError, pyarrow.ArrowException) as error:  # ArrowInvalid is a ValueError
        raise StorageError(
            f"cannot use {location} as storage ({first_line(error)}): give a local folder or a file://, s3:// or gs:// URI"
        ) from None


def is_empty(location: str) -> bool:
    """True where nothing is there, or an empty folder."""
    fs, path = _fs(location)
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        return True
    if info.type != pyarrow.fs.FileType.Directory:
        return False
    return not fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))


def create(location: str, data: bytes) -> None:
    """Write a new file, or raise FileExistsError where one is there. Local files are created exclusively (O_EXCL:
    of two processes, exactly one succeeds); object stores have no such primitive in pyarrow, so there it is a
    check, then a write."""
    if "://" not in location:
        with open(os.open(location, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        return
    if exists(location):
        raise FileExistsError(17, "File exists", location)
    write_bytes(location, data)


def exists(location: str) -> bool:
    fs, path = _fs(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def delete(location: str) -> None:
    """Remove a file; FileNotFoundError where there is none."""
    fs, path = _fs(location)
    fs.delete_file(path)


def make_dirs(location: str) -> None:
    fs, path = _fs(location)
    fs.create_dir(path, recursive=True)


def check_writable(location: str) -> None:
    """Create the folder if needed and raise OSError where this process cannot write in it."""
    make_dirs(location)
    if is_local(location) and not os.access(location, os.W_OK | os.X_OK):
        raise PermissionError(13, "Permission denied", location)


def require_writable(folder: str, option: str) -> None:
    """Create `folder` if needed, or say in one line that the folder given as `option` cannot be written: checked
    before any work, so that an unwritable path is bad input, not a failure minutes in."""
    try:
        check_writable(folder)
    except OSError as error:
        raise StorageError(
            f"cannot write to {option} {folder} ({error.strerror or error}): choose a writable folder"
        ) from None


def read_bytes(location: str) -> bytes:
    fs, path = _fs(location)
    with fs.open_input_stream(path) as stream:
        return stream.readall()


TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{8}$")  # the end of a temporary name (_temporary)


def _temporary(path: str) -> str:
    """Where a file is written before it is renamed to `path`: beside it (a rename within one file system), under a
    name no reader takes for it (Ray looks for `experiment_state-*.json`, `*.pkl`, `checkpoint_*`)."""
    return f"{path}.tmp-{uuid.uuid4().hex[:8]}"


def remove_temporaries(location: str, before: float) -> list[str]:
    """Delete the files anywhere under the folder `location` that a writer killed midway left under their temporary
    names (never read, the file they were to replace is whole), last written before the time `before`: one written
    since is a live writer's (the lock's heartbeat, a report); their paths."""
    fs, path = _fs(location)
    selector = pyarrow.fs.FileSelector(path, recursive=True, allow_not_found=True)
    found = sorted(
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pyarrow.fs.FileType.File
        and TEMPORARY.search(info.base_name)
        and info.mtime is not None
        and info.mtime.timestamp() < before
    )
    removed = []
    for temporary in found:
        try:
            fs.delete_file(temporary)
            removed.append(temporary)
        except FileNotFoundError:  # renamed or removed by its writer meanwhile
            continue
    return removed


def write_bytes(location: str, data: bytes) -> None:
    fs, path = _fs(location)
    temporary = _temporary(path)
    try:
        with fs.open_output_stream(temporary) as stream:
            stream.write(data)
        fs.move(temporary, path)
    except BaseException:
        if fs.get_file_info(temporary).type != pyarrow.fs.FileType.NotFound:
            fs.delete_file(temporary)
        raise


def write_json(location: str, value: dict) -> None:
    write_bytes(location, json.dumps(value, indent=2, default=str).encode())


def read_json(location: str) -> dict:
    return json.loads(read_bytes(location))


def write_parquet(location: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    write_bytes(location, buffer.getvalue())


def read_parquet(location: str) -> pd.DataFrame:
    # A path on Arrow's own file system, never a Python file object: Arrow goes on tidying up such a read in its
    # threads after the call returns, and a driver whose exit came meanwhile aborted (SIGABRT in a PyBuffer's
    # destructor; apache/arrow#33975 and #50482, where the exit hangs instead).
    fs, path = _fs(location)
    return pd.read_parquet(path, filesystem=fs)


def for_ray(location: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """`location` as Ray Tune's storage_path and storage_filesystem: a folder of this machine (a path or a file://
    URI) through WholeFiles; a URI of an object store as Ray resolves it itself (an object appears there only once
    its upload is complete)."""
    fs, path = _fs(location)
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return path, pyarrow.fs.PyFileSystem(WholeFiles())
    return location, None


def native(fs: pyarrow.fs.FileSystem) -> pyarrow.fs.FileSystem:
    """`fs`, or pyarrow's own LocalFileSystem in place of WholeFiles, to read with: reading needs no temporary names,
    and Arrow reading through Python file objects aborted a driver at its exit (see read_parquet)."""
    return pyarrow.fs.LocalFileSystem() if on_this_machine(fs) else fs


def on_this_machine(fs: pyarrow.fs.FileSystem) -> bool:
    """Whether a path of `fs` is a path of this machine's own file system (pyarrow's, or WholeFiles)."""
    return isinstance(fs, pyarrow.fs.LocalFileSystem) or (
        isinstance(fs, pyarrow.fs.PyFileSystem) and isinstance(fs.handler, WholeFiles)
    )


class WholeFiles(pyarrow.fs.FSSpecHandler):
    """This machine's file system, each file written under a temporary name beside its own and renamed to it once
    whole. Ray uploads its record of a sweep (`experiment_state-*.json`; after a resume, `tuner.pkl` and sweep.json
    as well) into the sweep's folder in place, with pyarrow's copy_files: a driver killed during that upload left
    the file empty or cut short, and the sweep could not be resumed (seen in the suite, killed as HyperBand paused
    its trials, which makes Tune save at once). Now the file there is the last whole one. Ray pickles this class
    into its state of every local sweep from version 0.6: its name and module stay (docs/files.md)."""

    def __init__(self):
        super().__init__(fsspec.implementations.local.LocalFileSystem())

    def __eq__(self, other) -> bool:
        # pyarrow copies between two file systems it finds equal with the source's copy_file, not through
        # open_output_stream: a copy into this one must not be taken for one within fsspec's.
        return isinstance(other, WholeFiles)

    def get_type_name(self) -> str:
        return "local"  # as Ray names this machine's file system in its messages

    def open_output_stream(self, path: str, metadata) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(_RenamedWhenWhole(path), mode="w")

    def copy_file(self, src: str, dest: str) -> None:
        os.makedirs(os.path.dirname(dest), exist_ok=True)  # as fsspec's own copy_file
        with open(src, "rb") as source, _RenamedWhenWhole(dest) as target:  # (an exception: not renamed, see close)
            shutil.copyfileobj(source, target)


class _RenamedWhenWhole(io.FileIO):
    """A file written under a temporary name and renamed to `path` when closed; removed instead where writing or
    closing it failed (a full disk), where it is closed as an exception passes (Ray writes `tuner.pkl` in a `with`
    block, whose exit closes the stream whatever happened: a stop signal while it pickled would have put an empty
    file in place), or where it was dropped unclosed (Arrow leaves the destination of a copy whose source failed to
    the garbage collector). No fsync: what this guards against is a killed process, whose written pages the kernel
    keeps, not a machine that loses power; storage.create syncs the one file that must survive that (sweep.json)."""

    def __init__(self, path: str):
        self.final_path = path
        self.failed = False
        self._passing_at_open = sys.exc_info()[1]  # (one being handled where the file was opened is no failure)
        super().__init__(_temporary(path), "wb")

    def __del__(self):
        self.failed = True  # dropped unclosed: what it holds is not known to be whole (closed: nothing to do)
        super().__del__()

    def write(self, data) -> int:
        """All of `data` (Arrow does not look at how much one write took)."""
        rest = memoryview(data).cast("B")
        size = rest.nbytes
        try:
            while rest:
                rest = rest[super().write(rest) :]
        except BaseException:
            self.failed = True
            self.close()  # removed now: a full disk wants its space back, whenever Arrow lets go of this stream
            raise
        return size

    def close(self) -> None:
        if self.closed:
            return
        passing = sys.exc_info()[1]
        self.failed = self.failed or (passing is not None and passing is not self._passing_at_open)
        try:
            super().close()
        except BaseException:
            self.failed = True
            raise
        finally:
            if self.failed:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.name)
            else:
                os.replace(self.name, self.final_path)
