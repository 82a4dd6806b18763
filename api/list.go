package api

import (
	"regexp"
	"strconv"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// paginate returns one page of items (already in list order) after the
// item whose key is token, and the token of the next page. Tokens are the
// last key returned, so a page is stable under inserts elsewhere; after
// reports whether an item comes after the token in list order.
func paginate[T any](items []T, pageSize int, token string, key func(T) string, after func(T, string) bool) ([]T, string, error) {
	if pageSize < 0 || pageSize > maxPageSize {
		return nil, "", errInvalid("pageSize %d is invalid: give 1 to %d (0 means %d)", pageSize, maxPageSize, defaultPageSize)
	}
	if pageSize == 0 {
		pageSize = defaultPageSize
	}
	start := 0
	if token != "" {
		start = len(items)
		for i, it := range items {
			if after(it, token) {
				start = i
				break
			}
		}
	}
	items = items[start:]
	if len(items) <= pageSize {
		return items, "", nil
	}
	return items[:pageSize], key(items[pageSize-1]), nil
}

// afterID orders lists by id, ascending.
func afterID(id, token string) bool { return id > token }

// afterSeqDesc orders lists newest first by sequence.
func afterSeqDesc(seq uint64, token string) bool {
	t, err := strconv.ParseUint(token, 10, 64)
	return err != nil || seq < t
}

var filterRE = regexp.MustCompile(`^\s*name\s*=\s*"([^"]*)"\s*$`)

// parseFilter accepts the one filter the API knows, name="x"; empty
// matches everything.
func parseFilter(f string) (name string, ok bool, err error) {
	if f == "" {
		return "", false, nil
	}
	m := filterRE.FindStringSubmatch(f)
	if m == nil {
		return "", false, errInvalid(`filter %q is not supported: use name="NAME"`, f)
	}
	return m[1], true, nil
}
