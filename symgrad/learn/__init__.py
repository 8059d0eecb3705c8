"""Learning by doing: the scalar explorer, a whole backward pass checked line by line
(``steps``), and exercises with answer keys."""
