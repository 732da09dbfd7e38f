//go:build !amd64

package compress

const haveCLMUL = false

func crc64Fold(s uint64, p []byte, k *[4]uint64, rem *[16]byte) {}
