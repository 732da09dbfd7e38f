package compress

import "golang.org/x/sys/cpu"

// The fold needs SSE2 (always there on amd64) and PCLMULQDQ.
var haveCLMUL = cpu.X86.HasPCLMULQDQ

// crc64Fold folds p (a multiple of 64 bytes, at least 64) into a 128-bit
// remainder after XORing the raw CRC state s into its first 8 bytes; k is
// crc64Consts.
//
//go:noescape
func crc64Fold(s uint64, p []byte, k *[4]uint64, rem *[16]byte)
