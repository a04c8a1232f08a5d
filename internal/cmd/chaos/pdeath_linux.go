package main

import "syscall"

// setParentDeath has the kernel kill the child when this process dies,
// even by kill -9, so no server outlives a killed run.
func setParentDeath(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
