package api

import (
	"regexp"
	"slices"
	"strconv"
	"strings"

	"strata/api/apitypes"
)

// The patterns are the cloud's: a resource name may be empty.
var (
	nameRE     = regexp.MustCompile(`^(|[a-z]([-_a-z0-9]{0,61}[a-z0-9])?)$`)
	familyRE   = regexp.MustCompile(`^[a-z][-a-z0-9]{1,61}[a-z0-9]$`)
	labelKeyRE = regexp.MustCompile(`^[a-z][-_./\\@0-9a-z]*$`)
	labelValRE = regexp.MustCompile(`^[-_./\\@0-9a-z]*$`)
	productRE  = regexp.MustCompile(`^[a-z0-9][-_a-z0-9]{0,49}$`)
)

const (
	maxLabels      = 64
	maxLabelLen    = 63
	maxDescription = 256
	maxProductIDs  = 16
	// blockSize is the guest block: disk sizes are whole blocks.
	blockSize = 4096
	// maxVolumeSize bounds disks and images (64 TiB): a map of 8 bytes
	// per 4 KiB chunk stays within memory a host can spare.
	maxVolumeSize = 64 << 40
	// maxIdempotencyKey bounds the Idempotency-Key header.
	maxIdempotencyKey = 128
)

func validateName(name string) error {
	if !nameRE.MatchString(name) {
		return errInvalid("name %q is invalid: use up to 63 lowercase letters, digits, '-' or '_', starting with a letter and not ending with '-' or '_'", name)
	}
	return nil
}

func validateFamily(family string) error {
	if family == "" {
		return nil
	}
	if !familyRE.MatchString(family) {
		return errInvalid("family %q is invalid: use 3 to 63 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit", family)
	}
	return nil
}

func validateDescription(d string) error {
	if len(d) > maxDescription {
		return errInvalid("description is %d bytes long; the limit is %d", len(d), maxDescription)
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	if len(labels) > maxLabels {
		return errInvalid("%d labels given; at most %d are allowed", len(labels), maxLabels)
	}
	for k, v := range labels {
		if len(k) > maxLabelLen || !labelKeyRE.MatchString(k) {
			return errInvalid("label key %q is invalid: use up to %d characters of a-z, 0-9, '-', '_', '.', '/', '\\', '@', starting with a letter", k, maxLabelLen)
		}
		if len(v) > maxLabelLen || !labelValRE.MatchString(v) {
			return errInvalid("label %q has an invalid value %q: use up to %d characters of a-z, 0-9, '-', '_', '.', '/', '\\', '@'", k, v, maxLabelLen)
		}
	}
	return nil
}

func validateProductIDs(ids []string) error {
	if len(ids) > maxProductIDs {
		return errInvalid("%d product ids given; at most %d are allowed", len(ids), maxProductIDs)
	}
	for _, p := range ids {
		if !productRE.MatchString(p) {
			return errInvalid("product id %q is invalid: use up to 50 lowercase letters, digits, '-' or '_'", p)
		}
	}
	return nil
}

// validateMeta checks the fields every resource has.
func validateMeta(name, description string, labels map[string]string) error {
	if e := validateName(name); e != nil {
		return e
	}
	if e := validateDescription(description); e != nil {
		return e
	}
	return validateLabels(labels)
}

// validateDiskSize checks a disk size: whole 4 KiB blocks, bounded.
func validateDiskSize(size int64) error {
	if size <= 0 || size%blockSize != 0 || size > maxVolumeSize {
		return errInvalid("disk size %d is invalid: give a positive multiple of %d bytes up to %d (64 TiB)", size, blockSize, int64(maxVolumeSize))
	}
	return nil
}

// parseOS normalises an OS type (case-insensitive; empty means def).
func parseOS(t, def string) (string, error) {
	switch strings.ToUpper(t) {
	case "":
		return def, nil
	case apitypes.OSLinux:
		return apitypes.OSLinux, nil
	case apitypes.OSWindows:
		return apitypes.OSWindows, nil
	}
	return "", errInvalid("os type %q is invalid: use LINUX or WINDOWS", t)
}

// parseUpdateMask splits a comma-separated field mask and checks every
// field is one the resource lets change; immutable names a field whose
// change gets a specific refusal.
func parseUpdateMask(mask string, allowed []string, immutable []string) ([]string, error) {
	if strings.TrimSpace(mask) == "" {
		return nil, errInvalid("updateMask is empty: name the fields to change, e.g. \"name,description\" (allowed: %s)", strings.Join(allowed, ", "))
	}
	var out []string
	for _, f := range strings.Split(mask, ",") {
		f = strings.TrimSpace(f)
		switch {
		case slices.Contains(allowed, f):
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		case slices.Contains(immutable, f):
			return nil, errInvalid("field %q cannot change after creation; make a new resource instead", f)
		default:
			return nil, errInvalid("updateMask names %q, which cannot be updated (allowed: %s)", f, strings.Join(allowed, ", "))
		}
	}
	return out, nil
}

// validRoles are the roles a binding may grant.
var validRoles = []string{apitypes.RoleViewer, apitypes.RoleImagesUser, apitypes.RoleEditor, apitypes.RoleAdmin}

// validateBinding checks one access binding. Public bindings
// (allAuthenticatedUsers) may only grant viewer or images.user: a resource
// anyone may change or delete is never what an admin meant.
func validateBinding(b apitypes.AccessBinding) error {
	if !slices.Contains(validRoles, b.RoleID) {
		return errInvalid("role %q does not exist; use one of %s", b.RoleID, strings.Join(validRoles, ", "))
	}
	s := b.Subject
	switch s.Type {
	case apitypes.SubjectUnixUser, apitypes.SubjectUnixGroup:
		if _, err := strconv.ParseUint(s.ID, 10, 32); err != nil {
			return errInvalid("subject %s:%s is invalid: give a numeric uid or gid", s.Type, s.ID)
		}
	case apitypes.SubjectSystem:
		switch s.ID {
		case apitypes.SystemAllUsers:
			return errInvalid("system:allUsers cannot be bound: the admin socket has no anonymous callers; use system:allAuthenticatedUsers to make a resource public")
		case apitypes.SystemAllAuthenticatedUsers:
			if b.RoleID != apitypes.RoleViewer && b.RoleID != apitypes.RoleImagesUser {
				return errInvalid("system:allAuthenticatedUsers may only get %s or %s: a public resource must not be changeable by everyone", apitypes.RoleViewer, apitypes.RoleImagesUser)
			}
		default:
			return errInvalid("system subject %q does not exist; use allAuthenticatedUsers", s.ID)
		}
	default:
		return errInvalid("subject type %q is invalid: use unixUser, unixGroup or system", s.Type)
	}
	return nil
}

// ParseSubject parses "unixUser:1000", "unixGroup:100" or
// "system:allAuthenticatedUsers" (for the CLI and tests).
func ParseSubject(s string) (apitypes.Subject, error) {
	t, id, ok := strings.Cut(s, ":")
	if !ok {
		return apitypes.Subject{}, errInvalid("subject %q is invalid: write type:id, e.g. unixUser:1000", s)
	}
	return apitypes.Subject{Type: t, ID: id}, nil
}
