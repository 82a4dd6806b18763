// Package apitypes holds the JSON shapes of strata's admin API: the
// resources, the request and response bodies, and the error body. The
// daemon (package api) and the CLI (cmd/strata) both import it, so the CLI
// does not link the server.
//
// The API is HTTP/JSON on the daemon's admin Unix socket
// (`curl --unix-socket /path/admin.sock http://strata/compute/v1/images?folderId=F`).
// Paths and field names follow Yandex Cloud's Compute API v1. Sizes are JSON
// numbers of bytes (not strings), times are RFC 3339. Custom methods use the
// `resource:verb` form. Every mutation answers 200 with an Operation; reads
// answer the resource. Failures answer the Error body with the HTTP status
// of its code (see HTTPStatus).
//
// Routes:
//
//	GET    /healthz                                          "ok"
//
//	POST   /compute/v1/folders                               CreateFolderRequest -> Operation(Folder)
//	GET    /compute/v1/folders?pageSize=&pageToken=&filter=  ListFoldersResponse
//	GET    /compute/v1/folders/{folderId}                    Folder
//	DELETE /compute/v1/folders/{folderId}                    Operation (folder must be empty)
//	GET    /compute/v1/folders/{folderId}/quotas             QuotaList
//	POST   /compute/v1/folders/{folderId}/quotas             SetQuotasRequest -> Operation(QuotaList)
//
//	GET    /compute/v1/images?folderId=&pageSize=&pageToken=&filter=name="x"   ListImagesResponse
//	GET    /compute/v1/images/{imageId}                      Image
//	GET    /compute/v1/images:latestByFamily?folderId=&family=   Image (NOT_FOUND when none)
//	POST   /compute/v1/images                                CreateImageRequest -> Operation(Image)
//	POST   /compute/v1/images:upload?folderId=&name=&...     body = the file -> Operation(Image)
//	       (query parameters: see UploadParams)
//	PATCH  /compute/v1/images/{imageId}                      UpdateImageRequest -> Operation(Image)
//	DELETE /compute/v1/images/{imageId}                      Operation
//	GET    /compute/v1/images/{imageId}:export?format=raw|qcow2   the file (Content-Length set)
//
//	GET    /compute/v1/disks?folderId=&pageSize=&pageToken=&filter=   ListDisksResponse
//	GET    /compute/v1/disks/{diskId}                        Disk
//	POST   /compute/v1/disks                                 CreateDiskRequest -> Operation(Disk)
//	PATCH  /compute/v1/disks/{diskId}                        UpdateDiskRequest -> Operation(Disk)
//	DELETE /compute/v1/disks/{diskId}                        Operation
//
//	GET    /compute/v1/snapshots?folderId=&pageSize=&pageToken=&filter=   ListSnapshotsResponse
//	GET    /compute/v1/snapshots/{snapshotId}                Snapshot
//	POST   /compute/v1/snapshots                             CreateSnapshotRequest -> Operation(Snapshot)
//	PATCH  /compute/v1/snapshots/{snapshotId}                UpdateSnapshotRequest -> Operation(Snapshot)
//	DELETE /compute/v1/snapshots/{snapshotId}                Operation
//	GET    /compute/v1/snapshots/{snapshotId}:export?format=raw|qcow2   the file
//
//	For each of folders, images, disks, snapshots ({kind}/{id}):
//	GET    /compute/v1/{kind}/{id}:listAccessBindings        ListAccessBindingsResponse
//	POST   /compute/v1/{kind}/{id}:setAccessBindings         SetAccessBindingsRequest -> Operation
//	POST   /compute/v1/{kind}/{id}:updateAccessBindings      UpdateAccessBindingsRequest -> Operation
//	GET    /compute/v1/{kind}/{id}/operations?pageSize=&pageToken=   ListOperationsResponse
//	       (images, disks, snapshots only)
//
//	GET    /operation/{operationId}                          Operation
//	GET    /operation?folderId=&pageSize=&pageToken=         ListOperationsResponse
//	POST   /operation/{operationId}:cancel                   Operation
//
// Header `Idempotency-Key: <any string up to 128 bytes>` on any mutation: a
// retry with the same key by the same caller returns the first Operation
// instead of doing the work again.
//
// Rights (roles bound on the folder or the resource; each includes the
// ones before it): compute.viewer gets and lists; compute.images.user also
// uses images and snapshots as sources and reads their data (:export,
// read-only NBD); compute.editor also creates, updates and deletes, and
// writes disks over NBD; compute.admin also changes access bindings.
// Creating and deleting folders and setting quotas is for daemon admins
// (root, the daemon's user, configured admins) only.
//
// Folder parameters (folderId in queries and bodies) accept a folder's id or
// its name; folder names are unique across the daemon.
//
// NBD exports: a disk is `disk/<diskId>` (read-write, one writing process at
// a time), an image `image/<imageId>`, a snapshot `snapshot/<snapshotId>`
// (both read-only).
package apitypes
