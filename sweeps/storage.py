"""Where sweeps live: a local folder or a URI of shared storage (s3://, gs://, an NFS path), through pyarrow's
file systems. Files are written whole under a temporary name, then renamed: a crash or a full disk never
leaves half a Parquet file where a reader would take it for the real one.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid

import pandas as pd
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


def write_bytes(location: str, data: bytes) -> None:
    fs, path = _fs(location)
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
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
