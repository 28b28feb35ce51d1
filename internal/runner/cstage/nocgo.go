//go:build !(linux && cgo)

package cstage

// Available reports whether this binary has the C stage (it needs cgo).
const Available = false
