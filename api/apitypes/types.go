package apitypes

import (
	"encoding/json"
	"net/http"
	"time"
)

// Image statuses (also used for disks and snapshots).
const (
	StatusCreating = "CREATING"
	StatusReady    = "READY"
	StatusError    = "ERROR"
	StatusDeleting = "DELETING"
)

// Folder statuses.
const (
	FolderActive = "ACTIVE"
)

// OS types.
const (
	OSLinux   = "LINUX"
	OSWindows = "WINDOWS"
)

// Import formats accepted by images:upload (format=) and exported by
// :export. Empty (or "auto") on upload means: detect by magic bytes.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
	FormatVMDK  = "vmdk"
	FormatVHD   = "vhd"
)

// Roles.
const (
	RoleViewer     = "compute.viewer"
	RoleImagesUser = "compute.images.user"
	RoleEditor     = "compute.editor"
	RoleAdmin      = "compute.admin"
)

// Subject types. A subject's string form is "type:id", e.g. "unixUser:1000".
const (
	SubjectUnixUser  = "unixUser"
	SubjectUnixGroup = "unixGroup"
	SubjectSystem    = "system"
	// SystemAllAuthenticatedUsers (type system) is every caller the daemon
	// can identify: binding it makes a resource public.
	SystemAllAuthenticatedUsers = "allAuthenticatedUsers"
	// SystemAllUsers is refused: the admin socket has no anonymous callers.
	SystemAllUsers = "allUsers"
)

// Quota names.
const (
	QuotaImagesCount    = "compute.images.count"
	QuotaImagesSize     = "compute.images.size" // bytes of virtual size
	QuotaDisksCount     = "compute.disks.count"
	QuotaSnapshotsCount = "compute.snapshots.count"
	QuotaDiskPoolsCount = "compute.diskPools.count" // pooled images; 0 by default
)

// Folder is a namespace: every image, disk and snapshot lives in one.
type Folder struct {
	ID          string            `json:"id"`
	CreatedAt   time.Time         `json:"createdAt"`
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Status      string            `json:"status"`
}

// OS describes the operating system of an image, disk or snapshot.
type OS struct {
	Type string `json:"type"` // OSLinux or OSWindows
}

// Image is an immutable, bootable disk image.
type Image struct {
	ID          string            `json:"id"`
	FolderID    string            `json:"folderId"`
	CreatedAt   time.Time         `json:"createdAt"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Family      string            `json:"family,omitempty"`
	// StorageSize is what making the image cost the store, counted when it
	// was made: for an upload, the bytes the import stored after dedup and
	// compression (0 when every chunk was already there); for an image
	// sealed from a disk, the raw bytes of its allocated chunks; an image
	// made from another image or a snapshot copies its source's figure.
	// Usage (on get) has the live accounting.
	StorageSize int64 `json:"storageSize"`
	// MinDiskSize is the smallest disk that can be made from the image;
	// never below VirtualSize.
	MinDiskSize int64    `json:"minDiskSize"`
	ProductIDs  []string `json:"productIds,omitempty"`
	Status      string   `json:"status"`
	OS          OS       `json:"os"`
	// Pooled: "optimized for deployment": disks are overlays directly on
	// the image's layer and share its cache.
	Pooled bool `json:"pooled"`
	// VirtualSize is the logical (raw) size in bytes.
	VirtualSize int64 `json:"virtualSize"`
	// Checksum is "sha256:<hex>" of the logical raw content.
	Checksum string `json:"checksum,omitempty"`
	// Source lineage: at most one of these is set.
	SourceImageID    string `json:"sourceImageId,omitempty"`
	SourceDiskID     string `json:"sourceDiskId,omitempty"`
	SourceSnapshotID string `json:"sourceSnapshotId,omitempty"`
	// SourceFormat is the detected format of an uploaded file.
	SourceFormat string `json:"sourceFormat,omitempty"`
	// ExportName is the NBD export of the image (read-only).
	ExportName string `json:"exportName"`
	// Usage is the layer's space accounting, filled on get.
	Usage *Usage `json:"usage,omitempty"`
}

// Disk is a writable volume: an overlay over an image, a snapshot, or
// nothing (an empty disk).
type Disk struct {
	ID               string            `json:"id"`
	FolderID         string            `json:"folderId"`
	CreatedAt        time.Time         `json:"createdAt"`
	Name             string            `json:"name,omitempty"`
	Description      string            `json:"description,omitempty"`
	Labels           map[string]string `json:"labels,omitempty"`
	Size             int64             `json:"size"`
	BlockSize        int64             `json:"blockSize"`
	ProductIDs       []string          `json:"productIds,omitempty"`
	Status           string            `json:"status"`
	OS               OS                `json:"os"`
	SourceImageID    string            `json:"sourceImageId,omitempty"`
	SourceSnapshotID string            `json:"sourceSnapshotId,omitempty"`
	// Pooled: the disk is an overlay directly on a pooled image's layer.
	Pooled bool `json:"pooled"`
	// ExportName is the NBD export name, "disk/<id>".
	ExportName string `json:"exportName"`
	// Usage is filled on get when the layer manager can report it.
	Usage *Usage `json:"usage,omitempty"`
}

// Usage is space accounting in bytes.
type Usage struct {
	Logical int64 `json:"logical"`
	Unique  int64 `json:"unique"`
	Shared  int64 `json:"shared"`
}

// Snapshot is a point-in-time, immutable copy of a disk: exactly the
// writes acknowledged before the create request. It is CREATING while its
// layer is sealed in the background and its checksum computed (one read of
// the content), then READY; it reads correctly (NBD, export) once READY.
type Snapshot struct {
	ID           string            `json:"id"`
	FolderID     string            `json:"folderId"`
	CreatedAt    time.Time         `json:"createdAt"`
	Name         string            `json:"name,omitempty"`
	Description  string            `json:"description,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	StorageSize  int64             `json:"storageSize"`
	DiskSize     int64             `json:"diskSize"`
	ProductIDs   []string          `json:"productIds,omitempty"`
	Status       string            `json:"status"`
	OS           OS                `json:"os"`
	SourceDiskID string            `json:"sourceDiskId,omitempty"`
	Checksum     string            `json:"checksum,omitempty"`
	ExportName   string            `json:"exportName"`
}

// Operation is the result of every mutation. While Done is false the work
// runs in the background; poll GET /operation/{id}. When Done, exactly one of
// Error or Response is set.
type Operation struct {
	ID          string            `json:"id"`
	Description string            `json:"description"`
	CreatedAt   time.Time         `json:"createdAt"`
	CreatedBy   string            `json:"createdBy"` // subject, e.g. "unixUser:1000"
	ModifiedAt  time.Time         `json:"modifiedAt"`
	Done        bool              `json:"done"`
	Metadata    OperationMetadata `json:"metadata"`
	Error       *Status           `json:"error,omitempty"`
	// Response is the resource the operation made or changed (Image, Disk,
	// Snapshot, Folder, QuotaList, ListAccessBindingsResponse), or {} for
	// deletes.
	Response json.RawMessage `json:"response,omitempty"`
}

// OperationMetadata says what an operation works on and how far it is.
type OperationMetadata struct {
	FolderID   string `json:"folderId,omitempty"`
	ImageID    string `json:"imageId,omitempty"`
	DiskID     string `json:"diskId,omitempty"`
	SnapshotID string `json:"snapshotId,omitempty"`
	// Progress is the fraction done, 0..1.
	Progress float64 `json:"progress"`
	// Phase names the current step of a long operation ("upload",
	// "import", "seal", "checksum").
	Phase string `json:"phase,omitempty"`
	// BytesDone / BytesTotal count the current phase's bytes when known.
	BytesDone  int64 `json:"bytesDone,omitempty"`
	BytesTotal int64 `json:"bytesTotal,omitempty"`
}

// Status is an operation's error: a gRPC-style code name and a sentence.
type Status struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []string `json:"details,omitempty"`
}

// Error is the body of every failed request.
type Error struct {
	Code    string   `json:"code"`
	Message string   `json:"message"`
	Details []string `json:"details,omitempty"`
}

// Error codes (gRPC names).
const (
	CodeCanceled           = "CANCELLED"
	CodeUnknown            = "UNKNOWN"
	CodeInvalidArgument    = "INVALID_ARGUMENT"
	CodeNotFound           = "NOT_FOUND"
	CodeAlreadyExists      = "ALREADY_EXISTS"
	CodePermissionDenied   = "PERMISSION_DENIED"
	CodeResourceExhausted  = "RESOURCE_EXHAUSTED"
	CodeFailedPrecondition = "FAILED_PRECONDITION"
	CodeAborted            = "ABORTED"
	CodeOutOfRange         = "OUT_OF_RANGE"
	CodeUnimplemented      = "UNIMPLEMENTED"
	CodeInternal           = "INTERNAL"
	CodeUnavailable        = "UNAVAILABLE"
	CodeDataLoss           = "DATA_LOSS"
	CodeUnauthenticated    = "UNAUTHENTICATED"
)

// HTTPStatus maps an error code to its HTTP status, as gRPC-gateway does.
func HTTPStatus(code string) int {
	switch code {
	case CodeCanceled:
		return 499
	case CodeInvalidArgument, CodeFailedPrecondition, CodeOutOfRange:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeAlreadyExists, CodeAborted:
		return http.StatusConflict
	case CodePermissionDenied:
		return http.StatusForbidden
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case CodeResourceExhausted:
		return http.StatusTooManyRequests
	case CodeUnimplemented:
		return http.StatusNotImplemented
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	default: // UNKNOWN, INTERNAL, DATA_LOSS
		return http.StatusInternalServerError
	}
}

// Subject names who a binding is for.
type Subject struct {
	ID   string `json:"id"`   // uid, gid, or allAuthenticatedUsers
	Type string `json:"type"` // unixUser, unixGroup or system
}

// AccessBinding grants a role to a subject on a folder or a resource.
type AccessBinding struct {
	RoleID  string  `json:"roleId"`
	Subject Subject `json:"subject"`
}

// ListAccessBindingsResponse answers :listAccessBindings.
type ListAccessBindingsResponse struct {
	AccessBindings []AccessBinding `json:"accessBindings"`
	NextPageToken  string          `json:"nextPageToken,omitempty"`
}

// SetAccessBindingsRequest replaces every binding on the resource.
type SetAccessBindingsRequest struct {
	AccessBindings []AccessBinding `json:"accessBindings"`
}

// Access binding delta actions.
const (
	ActionAdd    = "ADD"
	ActionRemove = "REMOVE"
)

// AccessBindingDelta adds or removes one binding.
type AccessBindingDelta struct {
	Action        string        `json:"action"` // ADD or REMOVE
	AccessBinding AccessBinding `json:"accessBinding"`
}

// UpdateAccessBindingsRequest applies deltas to the resource's bindings.
type UpdateAccessBindingsRequest struct {
	AccessBindingDeltas []AccessBindingDelta `json:"accessBindingDeltas"`
}

// Quota is one limit of a folder and what is used of it.
type Quota struct {
	Name  string `json:"name"`
	Limit int64  `json:"limit"`
	Usage int64  `json:"usage"`
}

// QuotaList answers GET /compute/v1/folders/{id}/quotas.
type QuotaList struct {
	FolderID string  `json:"folderId"`
	Quotas   []Quota `json:"quotas"`
}

// SetQuotasRequest sets limits by quota name; names not given keep theirs.
type SetQuotasRequest struct {
	Limits map[string]int64 `json:"limits"`
}

// CreateFolderRequest makes a folder (admins only).
type CreateFolderRequest struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// ListFoldersResponse lists the folders the caller can see.
type ListFoldersResponse struct {
	Folders       []Folder `json:"folders"`
	NextPageToken string   `json:"nextPageToken,omitempty"`
}

// CreateImageRequest makes an image from exactly one of ImageID, DiskID or
// SnapshotID (uploads use images:upload). OS and Pooled default to the
// source's; OS type cannot differ from the source's.
type CreateImageRequest struct {
	FolderID    string            `json:"folderId"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Family      string            `json:"family,omitempty"`
	MinDiskSize int64             `json:"minDiskSize,omitempty"`
	ProductIDs  []string          `json:"productIds,omitempty"`
	ImageID     string            `json:"imageId,omitempty"`
	DiskID      string            `json:"diskId,omitempty"`
	SnapshotID  string            `json:"snapshotId,omitempty"`
	OS          *OS               `json:"os,omitempty"`
	Pooled      bool              `json:"pooled,omitempty"`
}

// UploadParams are the query parameters of POST /compute/v1/images:upload
// (the body is the file). Repeated parameters: labels (each "k=v"),
// productIds. Booleans are "true"/"false".
//
//	folderId, name, description, family, minDiskSize, format (raw, qcow2,
//	vmdk, vhd; empty: detect), pooled, osType (LINUX, WINDOWS), labels,
//	productIds
type UploadParams struct{}

// UpdateImageRequest changes the fields named in UpdateMask (comma-separated
// JSON names: name, description, labels, minDiskSize). Family and OS are
// immutable.
type UpdateImageRequest struct {
	UpdateMask  string            `json:"updateMask"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	MinDiskSize int64             `json:"minDiskSize,omitempty"`
}

// ListImagesResponse lists images of a folder the caller can see.
type ListImagesResponse struct {
	Images        []Image `json:"images"`
	NextPageToken string  `json:"nextPageToken,omitempty"`
}

// CreateDiskRequest makes a disk: empty (Size required), or from ImageID or
// SnapshotID (Size defaults to the image's minDiskSize or the snapshot's
// diskSize, and may not be smaller). OS applies to empty disks only.
type CreateDiskRequest struct {
	FolderID    string            `json:"folderId"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Size        int64             `json:"size,omitempty"`
	ImageID     string            `json:"imageId,omitempty"`
	SnapshotID  string            `json:"snapshotId,omitempty"`
	OS          *OS               `json:"os,omitempty"`
}

// UpdateDiskRequest changes the fields named in UpdateMask (name,
// description, labels, size). A disk only grows.
type UpdateDiskRequest struct {
	UpdateMask  string            `json:"updateMask"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Size        int64             `json:"size,omitempty"`
}

// ListDisksResponse lists disks.
type ListDisksResponse struct {
	Disks         []Disk `json:"disks"`
	NextPageToken string `json:"nextPageToken,omitempty"`
}

// CreateSnapshotRequest snapshots a disk, also while a client writes to it.
type CreateSnapshotRequest struct {
	FolderID    string            `json:"folderId"` // defaults to the disk's
	DiskID      string            `json:"diskId"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// UpdateSnapshotRequest changes the fields named in UpdateMask (name,
// description, labels).
type UpdateSnapshotRequest struct {
	UpdateMask  string            `json:"updateMask"`
	Name        string            `json:"name,omitempty"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// ListSnapshotsResponse lists snapshots.
type ListSnapshotsResponse struct {
	Snapshots     []Snapshot `json:"snapshots"`
	NextPageToken string     `json:"nextPageToken,omitempty"`
}

// ListOperationsResponse lists operations, newest first.
type ListOperationsResponse struct {
	Operations    []Operation `json:"operations"`
	NextPageToken string      `json:"nextPageToken,omitempty"`
}

// IdempotencyHeader is the request header that makes a mutation safe to retry.
const IdempotencyHeader = "Idempotency-Key"
