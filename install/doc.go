// Package install applies a verified package on this machine.
//
// A receiver calls [Apply] once the whole file is in its spool and its SHA-256
// matched the manifest. Apply re-checks what it is given (a plain package
// name, a well-formed hash, a regular file of the stated size) and runs the
// actions of a [Config] in a fixed order; the first failure stops it.
//
//	to       copy the package to To/<name>
//	extract  unpack the package into Extract
//	exec     run Exec with sh -c (cmd.exe /c on Windows)
//
// The spool file is only ever read, and never held in memory as a whole.
//
// # Copy
//
// The bytes are written to a hidden temporary file in To (so the rename stays on
// one filesystem), hashed on the way and compared with the package's SHA-256,
// synced, made 0644 and renamed over To/<name>; the directory is then synced.
// Readers of To/<name> see the old file or the new one, never a part of it. On
// any failure the temporary file is removed. An existing directory at
// To/<name> is refused; an existing symlink is replaced, not followed. When To
// is the spool's own directory, the spool file is already in place and is left
// untouched.
//
// # Extract
//
// The format is recognised by content: gzip magic (1f 8b) means a tar inside
// gzip, "PK\x03\x04" or "PK\x05\x06" a zip, "ustar" at offset 257 (or an
// all-zero first block, an empty archive) a tar. Anything else fails with
// [ErrUnknownFormat]. Extraction has three steps:
//
//  1. Every entry header is read and checked. Nothing is written if one is
//     refused.
//  2. Entries are written into a fresh staging directory inside Extract
//     (.treecast-extract-<digits>), through an [os.Root], each checked again.
//  3. Each top-level entry of the staging directory is renamed into Extract.
//
// Rule for existing content: a top-level entry of the archive replaces the
// same-named entry of Extract as a whole; directories are not merged, and
// entries the archive does not name are left alone. A replaced file or
// symlink is swapped atomically by rename; a replaced directory is moved into
// a trash directory (.treecast-old-<digits>) first, so it is briefly absent, and
// removed once everything is in place. Entries are swapped one by one, not all
// at once. If a step fails, the staging directory is removed and the entries
// already moved in are undone: Extract holds its old contents again. Extract
// may not be "/".
//
// An entry is refused with an [*UnsafeEntryError] naming it when it has an
// absolute path, a ".." that leaves Extract, a NUL byte or an empty name; when
// it is a device, fifo, socket or unknown type; when a parent of its path is a
// symlink, hard link or file of the archive (writing through a link); when its
// name appears twice (other than a directory repeated); when a non-directory
// would replace Extract itself ("."); when it is a symlink whose target is
// absolute, climbs above Extract, or has ".." after a name (such a target could
// climb out through another symlink); or when it is a hard link to anything
// but an earlier regular file of the archive; or when it is a top-level name
// starting like a working directory (.treecast-extract-, .treecast-old-). A
// directory entry for Extract itself ("./", as `tar -C dir .` writes) is
// skipped.
//
// Files keep their permission bits (mode & 0777: never setuid, setgid or
// sticky) whatever the umask; directories keep theirs with the owner's rwx
// added, and directories only implied by deeper entries are 0755. Ownership
// and times are not restored. Every file and directory is synced before the
// move into place. Sizes in headers are never trusted for allocation: content
// is streamed.
//
// # Caps
//
// MaxExtractSize caps the bytes of file content an archive unpacks to, a
// sparse file counting at its whole size; unset, the cap is the free space of
// Extract's filesystem less 1/20, measured once leftovers (below) are gone.
// MaxExtractEntries caps its entries, 100,000 unless set. Both are checked on
// the headers in step 1, so an archive over a cap fails with a [*LimitError]
// naming the setting before anything is written; the bytes are counted again
// as step 2 writes them. Whatever the settings, an archive may hold at most
// 1,048,576 entries with names of at most 4096 bytes.
//
// One extraction at a time holds Extract, by a flock on the directory, so the
// working directories found there when it starts were left by one that was
// killed: staging directories are removed, and of a trash directory's entries,
// those Extract lacks are put back (they had been set aside and not yet
// replaced) and the rest removed. Only directories named exactly as extract
// names them (prefix and digits) are touched.
//
// # Exec
//
// The command runs as `/bin/sh -c CMD` in treecast's own working directory,
// with treecast's environment plus TREECAST_FILE (absolute path of the placed
// copy if To is set, else of the spool file), TREECAST_NAME and
// TREECAST_SHA256. Stdin is /dev/null; stdout and stderr go to
// Package.Output as they come, if it is set (else stdout is discarded). It runs in its own process
// group: when the context ends, the whole group is killed with SIGKILL and the
// context's error is returned. A non-zero exit or a fatal signal is an
// [*ExecError] carrying the last lines of stderr. A command still running
// Config.ExecTimeout after it had the whole package (with Stdin, after its
// stdin ended) is killed the same way, process group and all, and Apply
// or Stream fails with an [*ExecTimeoutError]. Background processes it
// leaves holding stderr open are waited for at most two seconds.
//
// On Windows the command runs as `%ComSpec% /d /s /c "CMD"` (cmd.exe, which
// takes CMD literally, as typed at a prompt; %TREECAST_FILE% reads the
// environment), stdin is NUL, and when the context ends its
// process tree is ended with `taskkill /t /f` (the shell alone if that
// fails). Windows has no signals, so ExecError.Signal stays empty.
//
// # Platforms
//
// Linux and macOS behave as described. On Windows the extraction lock is a
// named mutex named by the directory's identity instead of a flock,
// directories are not synced (a directory handle cannot be flushed; NTFS
// journals its entries), --to always copies (the receiver's open spool
// forbids renaming a hard link to it), permission bits map to the read-only
// attribute only, and a symlink entry needs Developer Mode or an
// administrator, or the apply fails naming it.
//
// # Errors
//
// Errors name the action and the path involved. A full disk surfaces as the
// write that failed ("write /opt/pkg/.app.tar.gz.tmp-123: no space left on
// device"); [IsNoSpace] detects it, and an archive larger than the free space
// left it (a [*LimitError] from the default size cap).
package install
