#include "textflag.h"

// FOLD folds the lane in X by the constants in K (low qword times the
// lane's first 8 bytes, high qword times its last 8) and XORs in the
// 16 bytes in D. T is scratch.
#define FOLD(X, K, D, T) \
	MOVOA     X, T        \
	PCLMULQDQ $0x00, K, X \
	PCLMULQDQ $0x11, K, T \
	PXOR      T, X        \
	PXOR      D, X

// func crc64Fold(s uint64, p []byte, k *[4]uint64, rem *[16]byte)
TEXT ·crc64Fold(SB), NOSPLIT, $0-48
	MOVQ s+0(FP), AX
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX
	MOVQ k+32(FP), BX
	MOVQ rem+40(FP), DI

	// Four lanes of 16 bytes; the state goes into the first.
	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3
	MOVQ  AX, X4
	PXOR  X4, X0
	MOVOU 0(BX), X5
	ADDQ  $64, SI
	SUBQ  $64, CX

loop:
	CMPQ  CX, $64
	JB    combine
	MOVOU 0(SI), X8
	MOVOU 16(SI), X9
	MOVOU 32(SI), X10
	MOVOU 48(SI), X11
	FOLD(X0, X5, X8, X4)
	FOLD(X1, X5, X9, X6)
	FOLD(X2, X5, X10, X7)
	FOLD(X3, X5, X11, X12)
	ADDQ  $64, SI
	SUBQ  $64, CX
	JMP   loop

combine:
	// Fold the lanes into one, 16 bytes at a time.
	MOVOU 16(BX), X5
	FOLD(X0, X5, X1, X4)
	FOLD(X0, X5, X2, X4)
	FOLD(X0, X5, X3, X4)
	MOVOU X0, 0(DI)
	RET
