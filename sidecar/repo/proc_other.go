//go:build !unix

package repo

func procScope() string { return "" }

func pidGone(int) bool { return false }
