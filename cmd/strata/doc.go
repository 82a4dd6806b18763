// Command strata is the command-line client of stratad's admin API. It
// speaks HTTP/JSON to the daemon's Unix socket (--socket, STRATA_SOCKET,
// else ./var/admin.sock, else /run/strata/admin.sock); the daemon knows
// who is calling from the socket's peer credentials, so there is nothing
// to log in to.
//
// Commands follow the resource model: folder, image, disk, snapshot,
// operation, access, quota. Every mutation returns an Operation; strata
// waits for it (with a progress bar for import, export and snapshot when
// stderr is a terminal) and prints the resulting resource, or with --async
// prints the operation and returns. Output is a table, or the API's own
// JSON with --format json. A failure prints the API's code and message
// (e.g. "RESOURCE_EXHAUSTED: ...") on stderr and exits with status 1.
package main
