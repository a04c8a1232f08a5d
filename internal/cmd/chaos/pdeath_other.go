//go:build unix && !linux

package main

import "syscall"

// setParentDeath: only Linux has a parent-death signal; elsewhere a chaos
// run killed by SIGKILL leaves its children to be stopped by hand.
func setParentDeath(*syscall.SysProcAttr) {}
