package api

// Test hooks: a plugin's side of the pipe socket without a process, and
// its registration with pipes.
var (
	PipesFromFile = pipesFromFile
	RegisterPipes = register
)
