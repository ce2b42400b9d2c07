/**
 * WASI preview1 (`wasi_snapshot_preview1`) ABI constants: rights, flags, file types,
 * clocks, and the sizes and offsets of the structs the host reads and writes in guest
 * memory (from the witx definitions, wasm32 layout).
 *
 * @module
 */

/** The import module every preview1 module links against. */
export const WASI_PREVIEW1 = "wasi_snapshot_preview1";

// --- clockid ---
/** Wall-clock time. */
export const CLOCK_REALTIME = 0;
/** Monotonic time since an unspecified point. */
export const CLOCK_MONOTONIC = 1;
/** CPU time of the process. */
export const CLOCK_PROCESS_CPUTIME_ID = 2;
/** CPU time of the thread. */
export const CLOCK_THREAD_CPUTIME_ID = 3;

// --- filetype ---
/** Unknown type (also pipes: preview1 has no FIFO type). */
export const FILETYPE_UNKNOWN = 0;
/** A block device. */
export const FILETYPE_BLOCK_DEVICE = 1;
/** A character device. */
export const FILETYPE_CHARACTER_DEVICE = 2;
/** A directory. */
export const FILETYPE_DIRECTORY = 3;
/** A regular file. */
export const FILETYPE_REGULAR_FILE = 4;
/** A datagram socket. */
export const FILETYPE_SOCKET_DGRAM = 5;
/** A byte-stream socket. */
export const FILETYPE_SOCKET_STREAM = 6;
/** A symbolic link. */
export const FILETYPE_SYMBOLIC_LINK = 7;

// --- whence ---
/** Seek relative to the start of the file. */
export const WHENCE_SET = 0;
/** Seek relative to the current offset. */
export const WHENCE_CUR = 1;
/** Seek relative to the end of the file. */
export const WHENCE_END = 2;

// --- advice ---
/** The largest valid `advice` value (`noreuse`). */
export const ADVICE_MAX = 5;

// --- fdflags ---
/** Append mode: data written is appended to the file's end. */
export const FDFLAGS_APPEND = 1 << 0;
/** Write according to synchronized I/O data integrity completion. */
export const FDFLAGS_DSYNC = 1 << 1;
/** Non-blocking mode. */
export const FDFLAGS_NONBLOCK = 1 << 2;
/** Synchronized read I/O operations. */
export const FDFLAGS_RSYNC = 1 << 3;
/** Write according to synchronized I/O file integrity completion. */
export const FDFLAGS_SYNC = 1 << 4;
/** Every defined fdflag. */
export const FDFLAGS_ALL = FDFLAGS_APPEND | FDFLAGS_DSYNC | FDFLAGS_NONBLOCK | FDFLAGS_RSYNC |
  FDFLAGS_SYNC;

// --- oflags ---
/** Create the file if it does not exist. */
export const OFLAGS_CREAT = 1 << 0;
/** Fail if not a directory. */
export const OFLAGS_DIRECTORY = 1 << 1;
/** Fail if the file already exists. */
export const OFLAGS_EXCL = 1 << 2;
/** Truncate the file to size 0. */
export const OFLAGS_TRUNC = 1 << 3;

// --- lookupflags ---
/** Follow the path's last component if it is a symbolic link. */
export const LOOKUPFLAGS_SYMLINK_FOLLOW = 1 << 0;

// --- fstflags ---
/** Set the access time to the given value. */
export const FSTFLAGS_ATIM = 1 << 0;
/** Set the access time to the current time. */
export const FSTFLAGS_ATIM_NOW = 1 << 1;
/** Set the modification time to the given value. */
export const FSTFLAGS_MTIM = 1 << 2;
/** Set the modification time to the current time. */
export const FSTFLAGS_MTIM_NOW = 1 << 3;

// --- rights (a u64 bit set) ---
/** `fd_datasync`. */
export const RIGHTS_FD_DATASYNC = 1n << 0n;
/** `fd_read` and `sock_recv`. */
export const RIGHTS_FD_READ = 1n << 1n;
/** `fd_seek` (implies `fd_tell`). */
export const RIGHTS_FD_SEEK = 1n << 2n;
/** `fd_fdstat_set_flags`. */
export const RIGHTS_FD_FDSTAT_SET_FLAGS = 1n << 3n;
/** `fd_sync`. */
export const RIGHTS_FD_SYNC = 1n << 4n;
/** `fd_tell`. */
export const RIGHTS_FD_TELL = 1n << 5n;
/** `fd_write` and `sock_send`. */
export const RIGHTS_FD_WRITE = 1n << 6n;
/** `fd_advise`. */
export const RIGHTS_FD_ADVISE = 1n << 7n;
/** `fd_allocate`. */
export const RIGHTS_FD_ALLOCATE = 1n << 8n;
/** `path_create_directory`. */
export const RIGHTS_PATH_CREATE_DIRECTORY = 1n << 9n;
/** `path_open` with `OFLAGS_CREAT`. */
export const RIGHTS_PATH_CREATE_FILE = 1n << 10n;
/** `path_link` (source directory). */
export const RIGHTS_PATH_LINK_SOURCE = 1n << 11n;
/** `path_link` (target directory). */
export const RIGHTS_PATH_LINK_TARGET = 1n << 12n;
/** `path_open`. */
export const RIGHTS_PATH_OPEN = 1n << 13n;
/** `fd_readdir`. */
export const RIGHTS_FD_READDIR = 1n << 14n;
/** `path_readlink`. */
export const RIGHTS_PATH_READLINK = 1n << 15n;
/** `path_rename` (source directory). */
export const RIGHTS_PATH_RENAME_SOURCE = 1n << 16n;
/** `path_rename` (target directory). */
export const RIGHTS_PATH_RENAME_TARGET = 1n << 17n;
/** `path_filestat_get`. */
export const RIGHTS_PATH_FILESTAT_GET = 1n << 18n;
/** `path_open` with `OFLAGS_TRUNC`. */
export const RIGHTS_PATH_FILESTAT_SET_SIZE = 1n << 19n;
/** `path_filestat_set_times`. */
export const RIGHTS_PATH_FILESTAT_SET_TIMES = 1n << 20n;
/** `fd_filestat_get`. */
export const RIGHTS_FD_FILESTAT_GET = 1n << 21n;
/** `fd_filestat_set_size`. */
export const RIGHTS_FD_FILESTAT_SET_SIZE = 1n << 22n;
/** `fd_filestat_set_times`. */
export const RIGHTS_FD_FILESTAT_SET_TIMES = 1n << 23n;
/** `path_symlink`. */
export const RIGHTS_PATH_SYMLINK = 1n << 24n;
/** `path_remove_directory`. */
export const RIGHTS_PATH_REMOVE_DIRECTORY = 1n << 25n;
/** `path_unlink_file`. */
export const RIGHTS_PATH_UNLINK_FILE = 1n << 26n;
/** `poll_oneoff` on this fd. */
export const RIGHTS_POLL_FD_READWRITE = 1n << 27n;
/** `sock_shutdown`. */
export const RIGHTS_SOCK_SHUTDOWN = 1n << 28n;
/** `sock_accept`. */
export const RIGHTS_SOCK_ACCEPT = 1n << 29n;
/** Every defined right. */
export const RIGHTS_ALL = (1n << 30n) - 1n;
/** Rights of a directory fd (its inheriting rights are {@linkcode RIGHTS_ALL}). */
export const RIGHTS_DIRECTORY = RIGHTS_FD_FDSTAT_SET_FLAGS | RIGHTS_FD_SYNC |
  RIGHTS_FD_ADVISE | RIGHTS_PATH_CREATE_DIRECTORY | RIGHTS_PATH_CREATE_FILE |
  RIGHTS_PATH_LINK_SOURCE | RIGHTS_PATH_LINK_TARGET | RIGHTS_PATH_OPEN | RIGHTS_FD_READDIR |
  RIGHTS_PATH_READLINK | RIGHTS_PATH_RENAME_SOURCE | RIGHTS_PATH_RENAME_TARGET |
  RIGHTS_PATH_FILESTAT_GET | RIGHTS_PATH_FILESTAT_SET_SIZE | RIGHTS_PATH_FILESTAT_SET_TIMES |
  RIGHTS_FD_FILESTAT_GET | RIGHTS_FD_FILESTAT_SET_TIMES | RIGHTS_PATH_SYMLINK |
  RIGHTS_PATH_REMOVE_DIRECTORY | RIGHTS_PATH_UNLINK_FILE | RIGHTS_POLL_FD_READWRITE;
/**
 * Rights of a stream (stdio pipe, character device): no seek or tell, which is also
 * how wasi-libc's `isatty` tells a terminal.
 */
export const RIGHTS_STREAM = RIGHTS_FD_READ | RIGHTS_FD_WRITE | RIGHTS_FD_FDSTAT_SET_FLAGS |
  RIGHTS_FD_SYNC | RIGHTS_FD_DATASYNC | RIGHTS_FD_FILESTAT_GET | RIGHTS_POLL_FD_READWRITE;
// --- eventtype, subclockflags, eventrwflags ---
/** A clock subscription's timeout expired. */
export const EVENTTYPE_CLOCK = 0;
/** A file descriptor has data to read. */
export const EVENTTYPE_FD_READ = 1;
/** A file descriptor has room to write. */
export const EVENTTYPE_FD_WRITE = 2;
/** A clock subscription's timeout is absolute, not relative to now. */
export const SUBCLOCKFLAGS_ABSTIME = 1 << 0;

// --- preopentype ---
/** A pre-opened directory. */
export const PREOPENTYPE_DIR = 0;

// --- struct layouts (wasm32) ---
/** `ciovec`/`iovec`: buf (u32) at 0, buf_len (u32) at 4. */
export const IOVEC_SIZE = 8;
/** `fdstat`: filetype (u8) 0, flags (u16) 2, rights_base (u64) 8, rights_inheriting (u64) 16. */
export const FDSTAT_SIZE = 24;
/**
 * `filestat`: dev 0, ino 8, filetype (u8) 16, nlink 24, size 32, atim 40, mtim 48, ctim 56
 * (all u64 but filetype).
 */
export const FILESTAT_SIZE = 64;
/** `dirent` header: d_next 0, d_ino 8, d_namlen (u32) 16, d_type (u8) 20; the name follows. */
export const DIRENT_SIZE = 24;
/** `prestat`: tag (u8) 0, dir name length (u32) 4. */
export const PRESTAT_SIZE = 8;
/**
 * `subscription`: userdata (u64) 0, tag (u8) 8, then at 16 either a clock
 * (id u32 16, timeout u64 24, precision u64 32, flags u16 40) or an fd (u32 16).
 */
export const SUBSCRIPTION_SIZE = 48;
/**
 * `event`: userdata (u64) 0, error (u16) 8, type (u8) 10, then for fd events
 * nbytes (u64) 16 and flags (u16) 24.
 */
export const EVENT_SIZE = 32;

/** Every function of `wasi_snapshot_preview1`, all of which the host provides. */
export const PREVIEW1_FUNCTIONS: readonly string[] = [
  "args_get",
  "args_sizes_get",
  "environ_get",
  "environ_sizes_get",
  "clock_res_get",
  "clock_time_get",
  "fd_advise",
  "fd_allocate",
  "fd_close",
  "fd_datasync",
  "fd_fdstat_get",
  "fd_fdstat_set_flags",
  "fd_fdstat_set_rights",
  "fd_filestat_get",
  "fd_filestat_set_size",
  "fd_filestat_set_times",
  "fd_pread",
  "fd_prestat_get",
  "fd_prestat_dir_name",
  "fd_pwrite",
  "fd_read",
  "fd_readdir",
  "fd_renumber",
  "fd_seek",
  "fd_sync",
  "fd_tell",
  "fd_write",
  "path_create_directory",
  "path_filestat_get",
  "path_filestat_set_times",
  "path_link",
  "path_open",
  "path_readlink",
  "path_remove_directory",
  "path_rename",
  "path_symlink",
  "path_unlink_file",
  "poll_oneoff",
  "proc_exit",
  "proc_raise",
  "sched_yield",
  "random_get",
  "sock_accept",
  "sock_recv",
  "sock_send",
  "sock_shutdown",
];
