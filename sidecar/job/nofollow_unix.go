package job

import "syscall"

const syscallNoFollow = syscall.O_NOFOLLOW
