// Package dirtree reads a real directory tree as a stream of entries
// (Source) and extracts a stream of entries into a directory (Sink).
//
// Both sides work on file descriptors, never on path strings, because the
// trees they touch are not trustworthy:
//
// The Source walks live machine roots that may change while they are read.
// Every step is relative to the already opened parent directory (openat with
// O_NOFOLLOW, fstatat with AT_SYMLINK_NOFOLLOW, readlinkat, flistxattr), so a
// directory swapped for a symlink between readdir and open makes the walk
// skip that name with a warning instead of leaving the tree. A file that
// shrinks or grows while it is read still yields exactly the size announced
// in its header (padded or truncated, with a warning), so the stream stays a
// valid archive; consistency is the caller's job (the export layer freezes
// running machines).
//
// The Sink extracts archives from the network, so it treats every entry as
// hostile. Names are re-checked with formats.CleanName (no "..", no absolute
// names), and every parent directory is opened with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|RESOLVE_NO_XDEV):
// the kernel, not string checks, guarantees that resolution stays below the
// root, and an entry whose parent path goes through any symlink at all — even
// one that points inside the tree — is refused. Legitimate archives never
// need to extract through a symlink, and refusing it removes the whole
// "symlink, then a file beneath it" attack class, including races. The final
// path component is then handled with *at calls on the parent descriptor that
// never follow it (mkdirat, openat O_CREAT|O_EXCL|O_NOFOLLOW, symlinkat,
// linkat without AT_SYMLINK_FOLLOW, mknodat, fchownat and utimensat with
// AT_SYMLINK_NOFOLLOW). Symlink contents are written verbatim (absolute
// NixOS links included), as they are never followed during extraction.
//
// Directory modes and times are applied in Sink.Close, deepest first, so
// read-only directories do not block their own extraction; directories are
// reopened there under the same openat2 rules, so an entry that replaced a
// directory with a symlink cannot redirect the deferred chmod.
//
// Metadata order matters and follows the kernel's rules: owner first (chown
// clears setuid/setgid and security.capability), then mode, then extended
// attributes, then times. Default POSIX ACLs of directories are deferred to
// Close as well, so files extracted into them do not inherit ACLs the archive
// does not list.
//
// The package needs Linux 5.6 or later (openat2) and /proc for the extended
// attributes of symlinks and device nodes.
package dirtree
