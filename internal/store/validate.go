package store

import (
	"errors"
	"fmt"
	"strings"
)

// Limits shared by all Store implementations.
const (
	// MaxKeyLen is the longest accepted key (and namespace), in bytes.
	MaxKeyLen = 512
	// DefaultMaxValueSize is the default largest value accepted by Put.
	DefaultMaxValueSize = 16 << 20
)

// Errors returned (wrapped) by Store implementations.
var (
	// ErrInvalidKey is returned for a key or namespace that fails
	// ValidateKey / ValidateNamespace.
	ErrInvalidKey = errors.New("invalid key")
	// ErrTooLarge is returned by Put for a value over the size limit.
	ErrTooLarge = errors.New("value too large")
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("store is closed")
	// ErrLocked is returned by OpenBolt when another process holds the
	// database file lock for longer than the lock timeout.
	ErrLocked = errors.New("store file is locked by another process")
)

func keyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '/'
}

// ValidateKey checks a key: non-empty, at most MaxKeyLen bytes, only
// [A-Za-z0-9-_./], and, split on '/', no empty, "." or ".." segment (so no
// leading, trailing or doubled '/').
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: key is empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	if err := checkChars("key", key); err != nil {
		return err
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: key %q has an empty path segment (leading, trailing or doubled '/')", ErrInvalidKey, key)
		case ".", "..":
			return fmt.Errorf("%w: key %q has a %q path segment; relative path segments are not allowed", ErrInvalidKey, key, seg)
		}
	}
	return nil
}

// ValidateNamespace checks a namespace name: like a key but without '/'.
func ValidateNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("%w: namespace is empty", ErrInvalidKey)
	}
	if strings.Contains(ns, "/") {
		return fmt.Errorf("%w: namespace %q contains '/'", ErrInvalidKey, ns)
	}
	if ns == "." || ns == ".." {
		return fmt.Errorf("%w: namespace %q is not allowed", ErrInvalidKey, ns)
	}
	if len(ns) > MaxKeyLen {
		return fmt.Errorf("%w: namespace is %d bytes, the limit is %d", ErrInvalidKey, len(ns), MaxKeyLen)
	}
	return checkChars("namespace", ns)
}

// validatePrefix checks a List prefix: it may be empty or end with '/',
// but must use the key charset and fit in a key.
func validatePrefix(prefix string) error {
	if len(prefix) > MaxKeyLen {
		return fmt.Errorf("%w: prefix is %d bytes, the limit is %d", ErrInvalidKey, len(prefix), MaxKeyLen)
	}
	return checkChars("prefix", prefix)
}

func checkChars(what, s string) error {
	for i := 0; i < len(s); i++ {
		if !keyChar(s[i]) {
			return fmt.Errorf("%w: %s %q has character %q at byte %d; allowed are A-Z a-z 0-9 - _ . /", ErrInvalidKey, what, s, s[i], i)
		}
	}
	return nil
}

func checkValue(value []byte, limit int) error {
	if len(value) > limit {
		return fmt.Errorf("%w: %d bytes, the limit is %d bytes", ErrTooLarge, len(value), limit)
	}
	return nil
}

// checkOp validates the common arguments of an operation on ns/key.
func checkOp(ns, key string) error {
	if err := ValidateNamespace(ns); err != nil {
		return err
	}
	return ValidateKey(key)
}
