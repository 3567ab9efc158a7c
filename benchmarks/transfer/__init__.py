"""The transfer benchmark: do data-free students' features serve a task beyond the teacher's labels?"""
