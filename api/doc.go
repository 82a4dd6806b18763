// Package api is strata's resource model and its HTTP/JSON admin API.
//
// # Model
//
// A folder is a namespace; images, disks and snapshots live in one. An
// image is an immutable layer with a catalog record (name, family, OS
// type, labels, checksum); a disk is a writable overlay over an image's or
// a snapshot's layer, or over nothing; a snapshot is the frozen state of a
// disk at one instant. Images come from exactly one source: an uploaded
// file, another image, a snapshot, or a disk (through a snapshot). Making
// an image from an image or a snapshot is a new record over the same
// layer, O(1). A family names a series of images; latestByFamily is the
// newest READY one by the catalog's monotonic creation sequence.
//
// # Consistency
//
// Catalog records live in the store's transactional key space (keys under
// "api/", see catalog.go). Every visible change commits in one
// storage.Update together with the layer references behind it
// (RetainLayer, ReleaseLayer, CreateDisk, DeleteDisk, Pending.Commit), and
// with its Operation record. Long work (import, snapshot seal, image from
// a disk) first commits a CREATING resource and a running operation, then
// a second transaction makes it READY; a failure, a cancel or a daemon
// restart removes the half-made resource and marks the operation done
// with an error (ABORTED after a restart). Deleting an image drops its
// record and its hold on the layer; disks on the layer keep it alive.
// Quota usage is kept as per-folder counters in the same transactions
// (recounted from the records at start), so creating a resource costs the
// same however many the store holds.
//
// # Access
//
// Callers are identified by their Unix socket peer credentials
// (ConnContext): subjects unixUser:<uid> and unixGroup:<gid> (primary and
// supplementary groups). Root, the daemon's own uid and Config.Admins are
// daemon admins: they alone create and delete folders and set quotas. Roles
// bound on a folder apply to everything in it; roles bound on a resource
// to that resource. Each includes the ones before it:
//
//	compute.viewer       get and list
//	compute.images.user  use as a source for disks and images, read the
//	                     data (export, read-only NBD)
//	compute.editor       create, update, delete; write disks over NBD
//	compute.admin        change access bindings
//
// Binding system:allAuthenticatedUsers (only to viewer or images.user)
// makes a resource public; system:allUsers is refused.
//
// # Errors
//
// Every error leaving the package is an *Error with a gRPC-style code and
// a sentence saying what to do; causes from storage and layer are
// translated here, once (toError). The HTTP layer maps codes to statuses
// with apitypes.HTTPStatus.
package api
