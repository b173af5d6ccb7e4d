module github.com/treecast/treecast

go 1.26.8
