module github.com/amber-backup/amber

go 1.26.8
