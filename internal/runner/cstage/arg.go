package cstage

// Arg is argv[1] of a process that runs the C stage (keep in sync with CSTAGE_ARG
// in the C code of cstage.go).
const Arg = "coffer-cinit"
